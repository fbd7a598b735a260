"""FluidSynth rendering: General MIDI files to dry mono signals, and where the SoundFont is.

- :func:`render_midi` renders one MIDI file dry and mono (reverb and chorus off),
  deterministic, events fed at their sample times (FluidSynth starts a voice on its
  next 64-sample block); :func:`render_parts` renders several to one length.
- :func:`find_soundfont` picks the SoundFont: an explicit path, ``$STUDIO_SEP_SOUNDFONT``,
  else the first of :data:`SOUNDFONT_CANDIDATES` installed.
- :func:`check_sample_rate` and :func:`check_soundfont` are the checks every renderer
  (and the room simulation, which renders at the same rates) applies to its inputs.

Progress callbacks are called as ``callback(stage, fraction)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import mido
import numpy as np

from studio_sep.util.errors import SimulationError

__all__ = [
    "SOUNDFONT_CANDIDATES",
    "check_sample_rate",
    "check_soundfont",
    "find_soundfont",
    "render_midi",
    "render_parts",
]

Callback = Callable[[str, float], None]

#: Where :func:`find_soundfont` looks, in order, after ``$STUDIO_SEP_SOUNDFONT``.
SOUNDFONT_CANDIDATES = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),  # Debian fluid-soundfont-gm
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),  # Debian timgm6mb-soundfont
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
)

_FLUID_RATE_RANGE = (8000, 96000)  # synth.sample-rate range accepted by FluidSynth 2.x
_CHUNK_SAMPLES = 1 << 16  # samples converted at a time where a whole-signal copy is not needed
_write_float = None


def _fluid_write_float():
    """``fluid_synth_write_float`` from the library pyfluidsynth loaded.

    pyfluidsynth's ``get_samples`` returns dithered 16-bit samples; the float writer
    gives the synth's own output, without quantisation or dither noise.
    """
    global _write_float  # a ctypes prototype built once; it holds no audio state
    if _write_float is None:
        import ctypes

        import fluidsynth

        _write_float = fluidsynth.cfunc(
            "fluid_synth_write_float", ctypes.c_int,
            ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
            ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
            ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1),
        )
        if _write_float is None:
            raise SimulationError(None, "soundfont", "the FluidSynth library has no fluid_synth_write_float",
                                  "install libfluidsynth 2.x")
    return _write_float


def check_sample_rate(sample_rate: int) -> int:
    """``sample_rate`` as an int, if it is an integer FluidSynth accepts (8-96 kHz)."""
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate:
        raise SimulationError(None, "sample_rate", f"sample_rate={sample_rate!r} must be an integer in Hz",
                              "pass e.g. 48000")
    low, high = _FLUID_RATE_RANGE
    if not low <= int(sample_rate) <= high:
        raise SimulationError(None, "sample_rate", f"sample_rate={sample_rate} Hz is outside {low}-{high} Hz",
                              "pass e.g. 16000 or 48000")
    return int(sample_rate)


def check_soundfont(soundfont: str | os.PathLike) -> Path:
    """``soundfont`` as a Path, if the file exists."""
    path = Path(soundfont)
    if not path.is_file():
        raise SimulationError(path, "soundfont", "SoundFont file not found",
                              "install one (e.g. Debian's fluid-soundfont-gm) or pass an existing .sf2 path")
    return path


# Long by its docstring and its checks; the synthesis is one loop over the MIDI events, which
# must stay in one place to keep the sample-accurate timing.
def render_midi(
    midi: mido.MidiFile,
    *,
    sample_rate: int,
    soundfont: str | os.PathLike,
    n_samples: int | None = None,
    tail_s: float = 1.0,
    gain: float = 0.5,
) -> np.ndarray:
    """Render a MIDI file dry, in mono, with FluidSynth.

    A fresh synthesizer (no audio driver) renders each call: reverb and chorus off,
    one SoundFont, events fed at their sample times, ``fluid_synth_write_float``
    pulling exactly the samples between events. Two calls with the same inputs give
    identical samples. FluidSynth starts a note at its next internal 64-sample
    block, so onsets may lag their exact time by up to 63 samples (same on every
    render). The output is ``(left + right) / 2``; it is not normalised: with the
    default ``gain`` peaks stay far below 1.

    Parameters
    ----------
    midi : mido.MidiFile
        The part(s) to render; tempo changes are honoured, all tracks are played.
    sample_rate : int
        Output sampling rate in Hz (8000-96000).
    soundfont : path-like
        The ``.sf2`` file.
    n_samples : int, optional
        Output length in samples. Events after the end are dropped. Default:
        ``round((midi.length + tail_s) * sample_rate)``.
    tail_s : float
        Release time kept after the last event when ``n_samples`` is not given.
    gain : float
        FluidSynth's master gain (``synth.gain``). At 0.5 the trio's parts peak
        around 0.1 (-20 dBFS) with TimGM6mb and FluidR3_GM.

    Returns
    -------
    dry_S : numpy.ndarray, shape (n_samples,), float64
        The dry mono signal.

    Raises
    ------
    SimulationError
        If the SoundFont is missing or unreadable, or a setting is out of range.
    """
    sample_rate = check_sample_rate(sample_rate)
    path = check_soundfont(soundfont)
    if n_samples is None:
        if not math.isfinite(tail_s) or tail_s < 0:
            raise SimulationError(None, "tail_s", f"tail_s={tail_s!r} must be >= 0", "pass e.g. 1.0")
        n_samples = int(round((midi.length + tail_s) * sample_rate))
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
        raise SimulationError(None, "n_samples", f"n_samples={n_samples!r} must be a positive integer",
                              "pass round(duration_s * sample_rate)")
    n_samples = int(n_samples)
    if not 0 < gain <= 10:
        raise SimulationError(None, "gain", f"gain={gain!r} must be in (0, 10]", "pass e.g. 0.2")

    import fluidsynth

    write_float = _fluid_write_float()
    synth = fluidsynth.Synth(
        gain=float(gain),
        samplerate=sample_rate,
        **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1},
    )
    try:
        sfid = synth.sfload(str(path))
        if sfid == -1:
            raise SimulationError(path, "soundfont", "FluidSynth cannot load this SoundFont",
                                  "pass a valid .sf2 file")
        for channel in range(16):
            if channel != 9:
                synth.program_select(channel, sfid, 0, 0)
        stereo_S2 = np.zeros((n_samples, 2), dtype=np.float32)

        def render_until(start: int, stop: int) -> None:
            if stop > start:
                view = stereo_S2[start:stop]
                address = view.ctypes.data
                write_float(synth.synth, stop - start, address, 0, 2, address, 1, 2)

        now_s = 0.0
        done = 0
        for message in midi:  # merged tracks, delta times in seconds (tempo applied)
            now_s += message.time
            at = int(round(now_s * sample_rate))
            if at >= n_samples:
                break
            render_until(done, at)
            done = max(done, at)
            if message.is_meta:
                continue
            kind = message.type
            if kind == "note_on":
                if message.velocity > 0:
                    synth.noteon(message.channel, message.note, message.velocity)
                else:
                    synth.noteoff(message.channel, message.note)
            elif kind == "note_off":
                synth.noteoff(message.channel, message.note)
            elif kind == "program_change":
                synth.program_change(message.channel, message.program)
            elif kind == "control_change":
                synth.cc(message.channel, message.control, message.value)
            elif kind == "pitchwheel":
                synth.pitch_bend(message.channel, message.pitch)
        render_until(done, n_samples)
    finally:
        synth.delete()
    # (left + right) / 2 in float64, a chunk at a time: the same numbers as the whole
    # array's mean, without a float64 copy of both channels (0.9 GB for 20 min at 48 kHz).
    dry_S = np.empty(n_samples)
    for start in range(0, n_samples, _CHUNK_SAMPLES):
        stop = start + _CHUNK_SAMPLES
        dry_S[start:stop] = stereo_S2[start:stop].astype(np.float64).mean(axis=1)
    return dry_S


def render_parts(
    parts: Mapping[str, mido.MidiFile],
    *,
    sample_rate: int,
    soundfont: str | os.PathLike,
    n_samples: int,
    gain: float = 0.5,
    callback: Callback | None = None,
) -> np.ndarray:
    """Render several parts separately, all to the same length.

    Returns
    -------
    dry_NS : numpy.ndarray, shape (len(parts), n_samples), float64
        Row ``n`` is the ``n``-th part of ``parts`` rendered by :func:`render_midi`.
    """
    check_soundfont(soundfont)
    dry_NS = np.zeros((len(parts), int(n_samples)))
    for n, midi in enumerate(parts.values()):
        dry_NS[n] = render_midi(midi, sample_rate=sample_rate, soundfont=soundfont, n_samples=n_samples,
                                gain=gain)
        if callback is not None:
            callback("render", (n + 1) / len(parts))
    return dry_NS


SEQUENCE_TAIL_S = 1.0  # rendered after a phrase's last event (its release)
SEQUENCE_GAP_S = 1.0  # more silence before the next phrase of a batch, not part of either


def render_in_sequence(midis: Sequence[mido.MidiFile], *, sample_rate: int, soundfont) -> list[np.ndarray]:
    """Render several MIDI files dry with one synthesizer (one SoundFont load, the slow part).

    The phrases are laid end to end in one MIDI file (fixed tempo, 1/1920 s ticks),
    each starting on a 64-sample block boundary ``SEQUENCE_TAIL_S + SEQUENCE_GAP_S`` after the
    previous one's last event; phrase ``j`` is the slice from its start to
    ``SEQUENCE_TAIL_S`` after its last event.
    """
    ticks_per_s = 1920  # 120 BPM (the default tempo) at 960 ticks per beat
    starts, lengths = [], []
    events = []
    at = 0
    for midi in midis:
        n = int(round((midi.length + SEQUENCE_TAIL_S) * sample_rate))
        starts.append(at)
        lengths.append(n)
        now_s = at / sample_rate
        for message in midi:  # seconds, tempo applied
            now_s += message.time
            if not message.is_meta:
                events.append((int(round(now_s * ticks_per_s)), len(events), message.copy(time=0)))
        at += -(-(n + int(round(SEQUENCE_GAP_S * sample_rate))) // 64) * 64
    combined = mido.MidiFile(type=0, ticks_per_beat=ticks_per_s // 2)
    track = mido.MidiTrack()
    combined.tracks.append(track)
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    dry_S = render_midi(combined, sample_rate=sample_rate, soundfont=soundfont, n_samples=max(at, 1))
    return [dry_S[a: a + n] for a, n in zip(starts, lengths)]


def find_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    """The SoundFont to use: the argument, else ``$STUDIO_SEP_SOUNDFONT``, else the
    first of :data:`SOUNDFONT_CANDIDATES` that exists."""
    if soundfont is not None:
        return check_soundfont(soundfont)
    env = os.environ.get("STUDIO_SEP_SOUNDFONT")
    if env:
        path = Path(env)
        if not path.is_file():
            raise SimulationError(path, "STUDIO_SEP_SOUNDFONT", "SoundFont file not found",
                                  "point the variable at an existing .sf2 or unset it")
        return path
    for candidate in SOUNDFONT_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise SimulationError(None, "soundfont", "no General MIDI SoundFont found in /usr/share/sounds/sf2",
                          "apt-get install fluid-soundfont-gm, or pass --soundfont PATH.sf2")
