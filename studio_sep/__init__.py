"""studio-sep: separate and remix multi-microphone studio sessions."""

__version__ = "0.1.0"
