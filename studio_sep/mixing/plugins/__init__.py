"""The plugin host: chains of pedalboard effects and VST3 plugins, validated and rendered
(:mod:`.host`, the public API), with VST3 plugins in worker processes."""
