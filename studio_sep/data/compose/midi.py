"""The composer's one MIDI writer: notes on one channel → a one-track MIDI file."""

from __future__ import annotations

from collections.abc import Sequence

import mido

TICKS_PER_BEAT = 480

#: A note: (start_tick, end_tick, key, velocity).
Note = tuple[int, int, int, int]


def notes_to_midi(
    notes: Sequence[Note],
    *,
    bpm: int,
    programs: Sequence[tuple[int, int]],
    channel: int = 0,
    name: str | None = None,
    time_signature: bool = False,
    end_tick: int | None = None,
) -> mido.MidiFile:
    """One track on one channel: the notes, with ``(tick, program)`` program changes.

    The track opens with the meta messages (``track_name`` when ``name`` is given, the
    tempo, a 4/4 ``time_signature`` when asked), then every event in tick order: at
    one tick, program changes first, then note-offs, then note-ons (so a repeated key
    restarts), each kind by key. Note-offs are ``note_off`` messages of velocity 0.
    ``end_of_track`` comes at ``end_tick`` (default: the last event).
    """
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    if name is not None:
        track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    if time_signature:
        track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    events = [(tick, -1, program, 0) for tick, program in programs]
    for on, off, key, velocity in notes:
        events.append((on, 1, key, velocity))
        events.append((off, 0, key, 0))
    events.sort()
    now = 0
    for tick, kind, value, velocity in events:
        if kind < 0:
            track.append(mido.Message("program_change", channel=channel, program=value, time=tick - now))
        else:
            track.append(mido.Message("note_on" if kind else "note_off", channel=channel, note=value,
                                      velocity=velocity, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0 if end_tick is None else end_tick - now))
    return midi


