"""Tests of the simulated reference session: composition, FluidSynth rendering, room.

Real renders (TimGM6mb, 16 kHz, a few seconds) and real pyroomacoustics rooms; no
mocks. Expensive objects (room calibrations, one set of images) are module fixtures.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest

from studio_sep import simulate as sim
from studio_sep.errors import SimulationError

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
pytestmark = pytest.mark.skipif(not SOUNDFONT.is_file(), reason="TimGM6mb.sf2 not installed")

FS = 16000
GRID_S = 0.01


# ------------------------------------------------------------------------ helpers


def notes_of(midi: mido.MidiFile) -> list[tuple[float, float, int]]:
    """(start_s, end_s, key) of every note, from the MIDI messages."""
    now, started, notes = 0.0, {}, []
    for message in midi:
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            started[(message.channel, message.note)] = now
        elif message.type in ("note_off", "note_on"):
            start = started.pop((message.channel, message.note))
            notes.append((start, now, message.note))
    assert not started, "every note_on has its note_off"
    return notes


def activity(midi: mido.MidiFile, length_s: float) -> np.ndarray:
    """Boolean grid (GRID_S steps over length_s): is any note of the part sounding?"""
    active = np.zeros(int(round(length_s / GRID_S)), dtype=bool)
    for start, end, _ in notes_of(midi):
        active[int(round(start / GRID_S)) : int(round(end / GRID_S))] = True
    return active


def single_note_midi(key: int, program: int, *, start_s: float, length_s: float) -> mido.MidiFile:
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))  # 1 beat = 0.5 s
    track.append(mido.Message("program_change", channel=0, program=program, time=0))
    track.append(mido.Message("note_on", channel=0, note=key, velocity=100, time=int(start_s * 960)))
    track.append(mido.Message("note_off", channel=0, note=key, velocity=0, time=int(length_s * 960)))
    return midi


def messages(parts: dict[str, mido.MidiFile]) -> dict[str, list]:
    return {name: [m for track in midi.tracks for m in track] for name, midi in parts.items()}


# ------------------------------------------------------------------------ composition


def test_compose_is_deterministic_per_seed_and_differs_across_seeds():
    a = sim.compose_parts(seed=7, duration_s=10.0)
    b = sim.compose_parts(seed=7, duration_s=10.0)
    c = sim.compose_parts(seed=8, duration_s=10.0)
    assert list(a) == ["piano", "sax", "violin"]
    assert messages(a) == messages(b)
    for name in a:
        assert messages(a)[name] != messages(c)[name]


def test_reference_passage_is_the_offset_seed_and_differs_from_the_session():
    session = sim.compose_parts(seed=7, duration_s=10.0)
    reference = sim.compose_reference_parts(seed=7, duration_s=10.0)
    offset = sim.compose_parts(seed=7 + sim.REFERENCE_SEED_OFFSET, duration_s=10.0)
    assert messages(reference) == messages(offset)
    for name in session:
        assert [n[2] for n in notes_of(reference[name])] != [n[2] for n in notes_of(session[name])]


def test_a_part_does_not_depend_on_the_other_parts_requested():
    full = sim.compose_parts(seed=3, duration_s=8.0)
    alone = sim.compose_parts(seed=3, duration_s=8.0, names=("violin",))
    assert list(alone) == ["violin"]
    assert messages(alone)["violin"] == messages(full)["violin"]


def test_programs_channels_and_tempo_at_time_zero():
    parts = sim.compose_parts(seed=11, duration_s=6.0)
    channels = set()
    for name, program in (("piano", 0), ("sax", 66), ("violin", 40)):
        track_messages = [m for track in parts[name].tracks for m in track]
        changes = [m for m in track_messages if m.type == "program_change"]
        assert [m.program for m in changes] == [program]
        tempos = [m for m in track_messages if m.type == "set_tempo"]
        assert len(tempos) == 1
        # both come before any note, at tick 0
        head = track_messages[: track_messages.index(changes[0]) + 1]
        assert sum(m.time for m in head) == 0
        assert all(m.type != "note_on" for m in head)
        channels.add(changes[0].channel)
        assert {m.channel for m in track_messages if m.type == "note_on"} == {changes[0].channel}
        assert all(1 <= m.velocity <= 127 for m in track_messages if m.type == "note_on")
    assert len(channels) == 3 and 9 not in channels


@pytest.mark.parametrize("duration_s", [2.5, 20.0])
def test_notes_end_before_the_tail_and_fill_the_passage(duration_s):
    parts = sim.compose_parts(seed=5, duration_s=duration_s)
    music_s = duration_s - 0.5
    grids = []
    for midi in parts.values():
        notes = notes_of(midi)
        assert max(end for _, end, _ in notes) <= music_s + 1e-9
        assert min(start for start, _, _ in notes) < 0.01  # every part starts at once
        grid = activity(midi, duration_s)
        last = int(round(music_s / GRID_S))
        assert not grid[last:].any()
        assert grid[:last].mean() > 0.7  # active through most of the passage
        grids.append(grid[:last])
    together = np.logical_and.reduce(grids)
    assert together.mean() > 0.5  # overlap in time


def test_parts_overlap_in_pitch_range():
    """Over 20 passages of 20 s, the pitch ranges played overlap pairwise."""
    shared = {("piano", "sax"): [], ("piano", "violin"): [], ("sax", "violin"): []}
    for seed in range(20):
        parts = sim.compose_parts(seed=seed, duration_s=20.0)
        ranges = {}
        for name, midi in parts.items():
            keys = [key for _, _, key in notes_of(midi)]
            spec = sim.INSTRUMENTS[name]
            assert spec.low_note <= min(keys) and max(keys) <= spec.high_note
            ranges[name] = (min(keys), max(keys))
        for a, b in shared:
            shared[(a, b)].append(min(ranges[a][1], ranges[b][1]) - max(ranges[a][0], ranges[b][0]))
    assert min(shared[("piano", "sax")]) >= 6
    assert min(shared[("piano", "violin")]) >= 2
    # the two melodic lines cross (share at least a whole tone) in most passages, touch in all
    assert min(shared[("sax", "violin")]) >= 0
    assert np.mean(np.asarray(shared[("sax", "violin")]) >= 2) >= 0.8


def test_compose_rejects_bad_settings():
    with pytest.raises(SimulationError, match="unknown part"):
        sim.compose_parts(seed=0, duration_s=5.0, names=("piano", "drums"))
    with pytest.raises(SimulationError, match="too short"):
        sim.compose_parts(seed=0, duration_s=1.0)


# ------------------------------------------------------------------------ rendering


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_render_is_deterministic_exact_length_and_unclipped(sample_rate):
    parts = sim.compose_parts(seed=2, duration_s=2.5)
    n_samples = round(2.5 * sample_rate)
    for midi in parts.values():
        a = sim.render_midi(midi, sample_rate=sample_rate, soundfont=SOUNDFONT, n_samples=n_samples)
        b = sim.render_midi(midi, sample_rate=sample_rate, soundfont=SOUNDFONT, n_samples=n_samples)
        assert a.shape == (n_samples,) and a.dtype == np.float64
        assert np.array_equal(a, b)
        peak = np.abs(a).max()
        assert 0.01 < peak < 0.5  # audible, far below clipping
        assert np.sqrt(np.mean(a**2)) > 1e-3


def test_default_length_is_midi_length_plus_tail():
    midi = sim.compose_parts(seed=2, duration_s=3.0)["sax"]
    dry = sim.render_midi(midi, sample_rate=FS, soundfont=SOUNDFONT, tail_s=0.75)
    assert dry.shape == (round((midi.length + 0.75) * FS),)


@pytest.mark.parametrize("sample_rate", [16000, 48000])
@pytest.mark.parametrize("start_s", [0.25, 0.5])
def test_note_starts_at_its_time(sample_rate, start_s):
    # The violin sample starts at once (TimGM6mb's piano has ~6 ms of leading silence).
    midi = single_note_midi(69, 40, start_s=start_s, length_s=0.5)
    dry = sim.render_midi(midi, sample_rate=sample_rate, soundfont=SOUNDFONT, n_samples=sample_rate)
    at = round(start_s * sample_rate)
    assert not dry[:at].any()  # silent before the note
    # FluidSynth starts a voice at its next 64-sample block (and its first sample is 0)
    assert at < np.argmax(dry != 0) <= at + 65


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_single_note_has_its_pitch(sample_rate):
    # A4 (440 Hz) on the piano, from 0.5 s to 1.5 s.
    midi = single_note_midi(69, 0, start_s=0.5, length_s=1.0)
    dry = sim.render_midi(midi, sample_rate=sample_rate, soundfont=SOUNDFONT, n_samples=2 * sample_rate)
    segment = dry[int(0.6 * sample_rate) : int(1.4 * sample_rate)]
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
    peak_hz = np.argmax(spectrum) * sample_rate / len(segment)
    assert abs(peak_hz - 440.0) < 5.0
    assert np.abs(dry[int(1.9 * sample_rate) :]).max() < 0.05 * np.abs(segment).max()  # released


def test_program_changes_the_timbre():
    piano = sim.render_midi(single_note_midi(69, 0, start_s=0.1, length_s=1.0), sample_rate=FS,
                            soundfont=SOUNDFONT, n_samples=FS)
    violin = sim.render_midi(single_note_midi(69, 40, start_s=0.1, length_s=1.0), sample_rate=FS,
                             soundfont=SOUNDFONT, n_samples=FS)
    correlation = np.dot(piano, violin) / (np.linalg.norm(piano) * np.linalg.norm(violin))
    assert abs(correlation) < 0.5


def test_render_rejects_a_missing_soundfont(tmp_path):
    midi = sim.compose_parts(seed=0, duration_s=2.0)["piano"]
    with pytest.raises(SimulationError, match="SoundFont file not found"):
        sim.render_midi(midi, sample_rate=FS, soundfont=tmp_path / "missing.sf2", n_samples=FS)
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"not a soundfont")
    with pytest.raises(SimulationError, match="cannot load"):
        sim.render_midi(midi, sample_rate=FS, soundfont=bad, n_samples=FS)


def test_render_parts_stacks_render_midi():
    parts = sim.compose_parts(seed=4, duration_s=2.0)
    dry_NS = sim.render_parts(parts, sample_rate=FS, soundfont=SOUNDFONT, n_samples=2 * FS)
    assert dry_NS.shape == (3, 2 * FS)
    violin = sim.render_midi(parts["violin"], sample_rate=FS, soundfont=SOUNDFONT, n_samples=2 * FS)
    assert np.array_equal(dry_NS[2], violin)


# ------------------------------------------------------------------------ geometry


def test_pattern_table_matches_the_manifest():
    from studio_sep import manifest

    assert set(sim.MIC_PATTERN_P) == set(manifest.PATTERNS)


def test_ircam_geometry_is_shifted_into_the_room_and_spots_aim_at_their_sources():
    mics, sources = sim.ircam_trio_geometry()
    by_name = {m.name: m for m in mics}
    assert [m.name for m in mics] == ["trio_l", "trio_c", "trio_r", "ambience", "spot_piano", "spot_sax",
                                      "spot_violin"]
    assert {s.name: s.program for s in sources} == {"piano": 0, "sax": 66, "violin": 40}
    assert by_name["ambience"].position_m == pytest.approx((0.6, 2.8, 1.8))
    dims = np.asarray(sim.DEFAULT_DIMENSIONS_M)
    for thing in (*mics, *sources):
        assert np.all((np.asarray(thing.position_m) > 0) & (np.asarray(thing.position_m) < dims))
    assert by_name["trio_l"].aim_azimuth_deg == 60.0 and by_name["trio_r"].aim_azimuth_deg == -60.0
    source_at = {s.name: np.asarray(s.position_m) for s in sources}
    for mic_name, target in (("trio_c", "piano"), ("spot_piano", "piano"), ("spot_sax", "sax"),
                             ("spot_violin", "violin")):
        mic = by_name[mic_name]
        az, el = np.radians(mic.aim_azimuth_deg), np.radians(mic.aim_elevation_deg)
        aim = np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        to_source = source_at[target] - np.asarray(mic.position_m)
        assert aim @ to_source / np.linalg.norm(to_source) == pytest.approx(1.0)
    assert by_name["spot_piano"].aim_elevation_deg == pytest.approx(-90.0)


def test_aim_angles_convention():
    assert sim.aim_angles((0, 0, 0), (0, 1, 0)) == pytest.approx((90.0, 0.0))
    assert sim.aim_angles((0, 0, 0), (1, 0, -1)) == pytest.approx((0.0, -45.0))


# ------------------------------------------------------------------------ room


@pytest.fixture(scope="module")
def room_05():
    return sim.calibrate_room(rt60_s=0.5, sample_rate=FS)


@pytest.fixture(scope="module")
def room_03():
    return sim.calibrate_room(rt60_s=0.3, sample_rate=FS)


@pytest.mark.parametrize("room", ["room_05", "room_03"])
def test_calibrated_room_measures_the_requested_rt60(room, request):
    calibration = request.getfixturevalue(room)
    requested = calibration.rt60_s
    assert calibration.dimensions_m == (7.5, 5.6, 2.6)
    assert abs(calibration.measured_rt60_s - requested) <= 0.05 * requested
    # The pitfall calibration fixes: Sabine's absorption measures far too long.
    assert calibration.sabine_measured_rt60_s > 1.15 * requested
    assert calibration.energy_absorption > calibration.sabine_energy_absorption
    # An independent measurement at 48 kHz agrees: the absorption holds across rates.
    at_48k = sim.measure_room_rt60(dimensions_m=calibration.dimensions_m,
                                   energy_absorption=calibration.energy_absorption,
                                   max_order=calibration.max_order, sample_rate=48000)
    assert abs(at_48k - requested) <= 0.05 * requested


def test_calibrate_rejects_an_unreachable_rt60():
    with pytest.raises(SimulationError, match="rt60_s"):
        sim.calibrate_room(rt60_s=0.05)


@pytest.fixture(scope="module")
def trio_images(room_05):
    """Equal-RMS dry parts (3 s) in the IRCAM trio geometry, RT60 0.5 s."""
    parts = sim.compose_parts(seed=3, duration_s=3.0)
    dry_NS = sim.render_parts(parts, sample_rate=FS, soundfont=SOUNDFONT, n_samples=3 * FS)
    dry_NS /= np.sqrt(np.mean(dry_NS**2, axis=1, keepdims=True))  # same energy: geometry decides
    mics, sources = sim.ircam_trio_geometry()
    before = dry_NS.copy()
    images_NMS = sim.render_images(dry_NS, source_positions_m=[s.position_m for s in sources], mics=mics,
                                   calibration=room_05, sample_rate=FS)
    assert np.array_equal(dry_NS, before)  # input not modified
    return dry_NS, images_NMS, mics, sources


def test_images_shape_and_every_image_non_silent(trio_images):
    dry_NS, images_NMS, mics, sources = trio_images
    assert images_NMS.shape == (3, 7, dry_NS.shape[1]) and images_NMS.dtype == np.float64
    assert np.all(np.isfinite(images_NMS))
    energy_NM = np.sum(images_NMS**2, axis=-1)
    assert np.all(energy_NM > 1e-3 * energy_NM.max())


def test_each_spot_mic_is_dominated_by_its_source(trio_images):
    _, images_NMS, mics, sources = trio_images
    energy_NM = np.sum(images_NMS**2, axis=-1)
    source_names = [s.name for s in sources]
    for m, mic in enumerate(mics):
        if mic.name.startswith("spot_"):
            own = source_names.index(mic.name.removeprefix("spot_"))
            others = [n for n in range(3) if n != own]
            assert energy_NM[own, m] > 1.1 * energy_NM[others, m].max(), mic.name


def test_images_sum_to_pyroomacoustics_own_mixture(room_03):
    """The sum over sources equals pyroomacoustics' Room.simulate of all sources at once."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(0)
    dry_NS = rng.standard_normal((2, FS // 2))
    sources_m = [(5.0, 2.0, 1.0), (2.0, 4.0, 1.4)]
    mics = [sim.MicSpec("a", (3.0, 3.0, 1.5), "cardioid", 30.0, -10.0),
            sim.MicSpec("b", (4.0, 2.5, 1.2), "figure8", -45.0, 20.0),
            sim.MicSpec("c", (1.0, 1.0, 2.0), "omni")]
    images_NMS = sim.render_images(dry_NS, source_positions_m=sources_m, mics=mics, calibration=room_03,
                                   sample_rate=FS)
    room = pra.ShoeBox(list(room_03.dimensions_m), fs=FS, materials=pra.Material(room_03.energy_absorption),
                       max_order=room_03.max_order)
    for position, signal in zip(sources_m, dry_NS):
        room.add_source(position, signal=signal)
    room.add_microphone_array(
        np.array([m.position_m for m in mics]).T,
        directivity=[pra.directivities.CardioidFamily(
            pra.directivities.DirectionVector(30.0, 100.0, degrees=True), p=0.5),
            pra.directivities.FigureEight(pra.directivities.DirectionVector(-45.0, 70.0, degrees=True)),
            None],
    )
    room.simulate()
    latency = pra.constants.get("frac_delay_length") // 2
    expected_MS = room.mic_array.signals[:, latency : latency + dry_NS.shape[1]]
    np.testing.assert_allclose(images_NMS.sum(axis=0), expected_MS, rtol=0,
                               atol=1e-6 * np.abs(expected_MS).max())


def test_images_are_deterministic(room_03):
    rng = np.random.default_rng(1)
    dry_NS = rng.standard_normal((2, FS // 4))
    kwargs = dict(source_positions_m=[(5.0, 2.0, 1.0), (2.0, 4.0, 1.4)],
                  mics=[((3.0, 3.0, 1.5), "hypercardioid", 10.0, 0.0),
                        ((4.0, 2.5, 1.2), "subcardioid", 0.0, 0.0)],
                  calibration=room_03, sample_rate=FS)
    assert np.array_equal(sim.render_images(dry_NS, **kwargs), sim.render_images(dry_NS, **kwargs))


def test_figure8_rejects_a_source_at_90_degrees(room_03):
    """Direct sound of a figure-8 aimed at the source vs. turned 90 degrees away."""
    impulse_NS = np.zeros((1, FS // 4))
    impulse_NS[0, 0] = 1.0
    source_m, mic_m = (3.0, 2.2, 1.3), (4.0, 2.2, 1.3)  # 1 m apart, off the room's symmetry planes
    mics = [(mic_m, "figure8", 180.0, 0.0),  # aimed at the source (it lies towards -x)
            (mic_m, "figure8", 90.0, 0.0),  # turned 90 degrees
            (mic_m, "omni", 0.0, 0.0)]
    images_NMS = sim.render_images(impulse_NS, source_positions_m=[source_m], mics=mics, calibration=room_03,
                                   sample_rate=FS)
    arrival = round(1.0 / 343.0 * FS)  # propagation delay is kept
    assert np.argmax(np.abs(images_NMS[0, 2])) == pytest.approx(arrival, abs=1)
    window = slice(arrival - 8, arrival + 9)  # before the first reflection (floor, 2.8 m)
    direct_M = np.sum(images_NMS[0, :, window] ** 2, axis=-1)
    assert direct_M[0] == pytest.approx(direct_M[2], rel=0.05)  # on axis: gain 1, like the omni
    assert direct_M[1] < 1e-3 * direct_M[0]  # at 90 degrees: more than 30 dB down
    # and the room still reaches the turned mic through reflections
    assert np.sum(images_NMS[0, 1] ** 2) > 0.01 * np.sum(images_NMS[0, 0] ** 2)


def test_render_images_rejects_bad_inputs(room_03):
    dry_NS = np.zeros((1, 100))
    mic = [((3.0, 3.0, 1.5), "omni", 0.0, 0.0)]
    with pytest.raises(SimulationError, match="not inside"):
        sim.render_images(dry_NS, source_positions_m=[(9.0, 1.0, 1.0)], mics=mic, calibration=room_03,
                          sample_rate=FS)
    with pytest.raises(SimulationError, match="pattern"):
        sim.render_images(dry_NS, source_positions_m=[(2.0, 1.0, 1.0)],
                          mics=[((3.0, 3.0, 1.5), "shotgun", 0, 0)],
                          calibration=room_03, sample_rate=FS)
    with pytest.raises(SimulationError, match="shape"):
        sim.render_images(dry_NS, source_positions_m=[(2.0, 1.0, 1.0), (3.0, 1.0, 1.0)], mics=mic,
                          calibration=room_03, sample_rate=FS)
