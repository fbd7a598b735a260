#!/usr/bin/env bash
# Install the Debian packages studio-sep needs, only those missing (idempotent).
#   libfluidsynth3       FluidSynth, used through pyfluidsynth to render MIDI parts
#   fluid-soundfont-gm   FluidR3_GM General MIDI SoundFont (default, realistic)
#   timgm6mb-soundfont   TimGM6mb, a 6 MB GM SoundFont (fast tests)
#   libsndfile1          audio file I/O (soundfile)
#   zam-plugins          real VST3 plugins for the mixing stage and its tests
#   espeak-ng            spoken voices for the scene zoo (non-GM sources)
#   chromium             headless browser for the HTML report's test (tests/test_report.py)
#   chromium-driver      its WebDriver (selenium drives /usr/bin/chromedriver; nothing is downloaded)
set -euo pipefail
packages=(libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont libsndfile1 zam-plugins espeak-ng chromium
          chromium-driver)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages: all present (${packages[*]})"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
echo "system packages: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
