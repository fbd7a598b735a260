"""Tests of the simulated reference session: composition, FluidSynth rendering, room.

Real renders (TimGM6mb, 16 kHz, a few seconds) and real pyroomacoustics rooms; no
mocks. Expensive objects (room calibrations, one set of images) are module fixtures.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest

from studio_sep import sim
from studio_sep.data import compose
from studio_sep.data.instruments import INSTRUMENTS
from studio_sep.dsp.geometry import aim_angles
from studio_sep.io import synth
from studio_sep.sim import trio
from studio_sep.util.errors import SimulationError

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
    a = compose.compose_parts(seed=7, duration_s=10.0)
    b = compose.compose_parts(seed=7, duration_s=10.0)
    c = compose.compose_parts(seed=8, duration_s=10.0)
    assert list(a) == ["piano", "sax", "violin"]
    assert messages(a) == messages(b)
    for name in a:
        assert messages(a)[name] != messages(c)[name]


def test_reference_passage_is_the_offset_seed_and_differs_from_the_session():
    session = compose.compose_parts(seed=7, duration_s=10.0)
    reference = compose.compose_reference_parts(seed=7, duration_s=10.0)
    offset = compose.compose_parts(seed=7 + compose.REFERENCE_SEED_OFFSET, duration_s=10.0)
    assert messages(reference) == messages(offset)
    for name in session:
        assert [n[2] for n in notes_of(reference[name])] != [n[2] for n in notes_of(session[name])]


def test_a_part_does_not_depend_on_the_other_parts_requested():
    full = compose.compose_parts(seed=3, duration_s=8.0)
    alone = compose.compose_parts(seed=3, duration_s=8.0, names=("violin",))
    assert list(alone) == ["violin"]
    assert messages(alone)["violin"] == messages(full)["violin"]


def test_programs_channels_and_tempo_at_time_zero():
    parts = compose.compose_parts(seed=11, duration_s=6.0)
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
    parts = compose.compose_parts(seed=5, duration_s=duration_s)
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
        parts = compose.compose_parts(seed=seed, duration_s=20.0)
        ranges = {}
        for name, midi in parts.items():
            keys = [key for _, _, key in notes_of(midi)]
            spec = INSTRUMENTS[name]
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
        compose.compose_parts(seed=0, duration_s=5.0, names=("piano", "drums"))
    with pytest.raises(SimulationError, match="too short"):
        compose.compose_parts(seed=0, duration_s=1.0)


# ------------------------------------------------------------------------ rendering


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_render_is_deterministic_exact_length_and_unclipped(sample_rate):
    parts = compose.compose_parts(seed=2, duration_s=2.5)
    n_samples = round(2.5 * sample_rate)
    for midi in parts.values():
        a = synth.render_midi(midi, sample_rate=sample_rate, soundfont=SOUNDFONT, n_samples=n_samples)
        b = synth.render_midi(midi, sample_rate=sample_rate, soundfont=SOUNDFONT, n_samples=n_samples)
        assert a.shape == (n_samples,) and a.dtype == np.float64
        assert np.array_equal(a, b)
        peak = np.abs(a).max()
        assert 0.01 < peak < 0.5  # audible, far below clipping
        assert np.sqrt(np.mean(a**2)) > 1e-3


def test_default_length_is_midi_length_plus_tail():
    midi = compose.compose_parts(seed=2, duration_s=3.0)["sax"]
    dry = synth.render_midi(midi, sample_rate=FS, soundfont=SOUNDFONT, tail_s=0.75)
    assert dry.shape == (round((midi.length + 0.75) * FS),)


@pytest.mark.parametrize("sample_rate", [16000, 48000])
@pytest.mark.parametrize("start_s", [0.25, 0.5])
def test_note_starts_at_its_time(sample_rate, start_s):
    # The violin sample starts at once (TimGM6mb's piano has ~6 ms of leading silence).
    midi = single_note_midi(69, 40, start_s=start_s, length_s=0.5)
    dry = synth.render_midi(midi, sample_rate=sample_rate, soundfont=SOUNDFONT, n_samples=sample_rate)
    at = round(start_s * sample_rate)
    assert not dry[:at].any()  # silent before the note
    # FluidSynth starts a voice at its next 64-sample block (and its first sample is 0)
    assert at < np.argmax(dry != 0) <= at + 65


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_single_note_has_its_pitch(sample_rate):
    # A4 (440 Hz) on the piano, from 0.5 s to 1.5 s.
    midi = single_note_midi(69, 0, start_s=0.5, length_s=1.0)
    dry = synth.render_midi(midi, sample_rate=sample_rate, soundfont=SOUNDFONT, n_samples=2 * sample_rate)
    segment = dry[int(0.6 * sample_rate) : int(1.4 * sample_rate)]
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
    peak_hz = np.argmax(spectrum) * sample_rate / len(segment)
    assert abs(peak_hz - 440.0) < 5.0
    assert np.abs(dry[int(1.9 * sample_rate) :]).max() < 0.05 * np.abs(segment).max()  # released


def test_program_changes_the_timbre():
    piano = synth.render_midi(single_note_midi(69, 0, start_s=0.1, length_s=1.0), sample_rate=FS,
                            soundfont=SOUNDFONT, n_samples=FS)
    violin = synth.render_midi(single_note_midi(69, 40, start_s=0.1, length_s=1.0), sample_rate=FS,
                             soundfont=SOUNDFONT, n_samples=FS)
    correlation = np.dot(piano, violin) / (np.linalg.norm(piano) * np.linalg.norm(violin))
    assert abs(correlation) < 0.5


def test_render_rejects_a_missing_soundfont(tmp_path):
    midi = compose.compose_parts(seed=0, duration_s=2.0)["piano"]
    with pytest.raises(SimulationError, match="SoundFont file not found"):
        synth.render_midi(midi, sample_rate=FS, soundfont=tmp_path / "missing.sf2", n_samples=FS)
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"not a soundfont")
    with pytest.raises(SimulationError, match="cannot load"):
        synth.render_midi(midi, sample_rate=FS, soundfont=bad, n_samples=FS)


def test_render_parts_stacks_render_midi():
    parts = compose.compose_parts(seed=4, duration_s=2.0)
    dry_NS = synth.render_parts(parts, sample_rate=FS, soundfont=SOUNDFONT, n_samples=2 * FS)
    assert dry_NS.shape == (3, 2 * FS)
    violin = synth.render_midi(parts["violin"], sample_rate=FS, soundfont=SOUNDFONT, n_samples=2 * FS)
    assert np.array_equal(dry_NS[2], violin)


# ------------------------------------------------------------------------ geometry


def test_pattern_table_matches_the_manifest():
    from studio_sep.session import manifest

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
    assert aim_angles((0, 0, 0), (0, 1, 0)) == pytest.approx((90.0, 0.0))
    assert aim_angles((0, 0, 0), (1, 0, -1)) == pytest.approx((0.0, -45.0))


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
    parts = compose.compose_parts(seed=3, duration_s=3.0)
    dry_NS = synth.render_parts(parts, sample_rate=FS, soundfont=SOUNDFONT, n_samples=3 * FS)
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


# ------------------------------------------------------------------------ streaming


def test_image_blocks_equal_the_whole_render(room_03):
    rng = np.random.default_rng(2)
    dry_NS = rng.standard_normal((2, 3 * FS // 2 + 7))
    kwargs = dict(source_positions_m=[(5.0, 2.0, 1.0), (2.0, 4.0, 1.4)], calibration=room_03, sample_rate=FS,
                  mics=[sim.MicSpec("a", (3.0, 3.0, 1.5), "cardioid", 30.0, -10.0),
                        sim.MicSpec("b", (1.0, 1.0, 2.0), "omni")])
    images_NMS = sim.render_images(dry_NS, **kwargs)
    rt60_samples = round(room_03.rt60_s * FS)  # the RIRs are longer (0.95 s)
    for block_samples in (rt60_samples // 3, 2 * rt60_samples + 1, dry_NS.shape[1] - 1, dry_NS.shape[1] + 1):
        blocks = list(sim.image_blocks(dry_NS, block_samples=block_samples, **kwargs))
        assert [start for start, _ in blocks] == list(range(0, dry_NS.shape[1], block_samples))
        assert all(b.shape[:2] == (2, 2) and b.dtype == np.float64 for _, b in blocks)
        streamed_NMS = np.concatenate([b for _, b in blocks], axis=-1)
        if len(blocks) == 1:  # one block is the whole render, sample for sample
            assert np.array_equal(streamed_NMS, images_NMS)
        else:  # the same sums in other FFT blocks: equal to float64 rounding
            np.testing.assert_allclose(streamed_NMS, images_NMS, rtol=0,
                                       atol=1e-12 * np.abs(images_NMS).max())


def _peak_bytes_taking_blocks(n_samples: int, block_samples: int, calibration):
    """Peak traced allocation while summing the images of 3 noise sources at 4 mics block by block."""
    import tracemalloc

    dry_NS = np.random.default_rng(1).standard_normal((3, n_samples))
    kwargs = dict(source_positions_m=[(5.0, 1.0, 1.0), (5.0, 2.0, 1.2), (5.0, 3.0, 1.4)],
                  mics=[((1.0 + m, 2.0, 1.5), "omni", 0.0, 0.0) for m in range(4)], calibration=calibration,
                  sample_rate=FS)
    blocks = sim.image_blocks(dry_NS, block_samples=block_samples, **kwargs)
    mics_MS = np.zeros((4, n_samples))  # what a caller keeps: here the mic signals
    tracemalloc.start()
    try:
        for start, images_NMB in blocks:
            mics_MS[:, start:start + images_NMB.shape[-1]] += images_NMB.sum(axis=0)
            del images_NMB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, mics_MS, dict(dry_NS=dry_NS, **kwargs)


def test_image_blocks_memory_does_not_grow_with_the_signal(room_03):
    """Images taken 0.25 s at a time: the peak allocation is the same for 5 s and 20 s of
    signal (a block and the RIR history), far below all images at once."""
    peak_5s, _, _ = _peak_bytes_taking_blocks(5 * FS, FS // 4, room_03)
    peak_20s, mics_MS, inputs = _peak_bytes_taking_blocks(20 * FS, FS // 4, room_03)
    all_images_bytes = 3 * 4 * 20 * FS * 8  # 30.7 MB
    assert peak_20s < 1.2 * peak_5s, (peak_5s, peak_20s)
    assert peak_20s < all_images_bytes / 8, (peak_20s, all_images_bytes)
    dry_NS = inputs.pop("dry_NS")
    expected_MS = sim.render_images(dry_NS, **inputs).sum(axis=0)
    np.testing.assert_allclose(mics_MS, expected_MS, rtol=0, atol=1e-12 * np.abs(expected_MS).max())


def test_image_blocks_checks_before_any_work(room_03):
    with pytest.raises(SimulationError, match="block_samples"):
        sim.image_blocks(np.zeros((1, 100)), source_positions_m=[(2.0, 1.0, 1.0)],
                         mics=[((3.0, 3.0, 1.5), "omni", 0.0, 0.0)], calibration=room_03, sample_rate=FS,
                         block_samples=0)


def _session_settings(**changes) -> sim.SimulationSettings:
    """A 3 s, 16 kHz session in a dry room (RT60 0.2 s: short RIRs, a quick render)."""
    values = dict(seed=0, duration_s=3.0, sample_rate=FS, rt60_s=0.2, soundfont=SOUNDFONT,
                  reference_duration_s=2.0)
    return sim.SimulationSettings(**(values | changes))


def test_session_streamed_in_small_blocks_is_the_one_block_session(tmp_path, monkeypatch):
    from studio_sep.io import audio as audio_io
    from studio_sep.session import load_session

    whole = sim.simulate_session(tmp_path / "whole", _session_settings())
    monkeypatch.setattr(trio, "IMAGE_BLOCK_SAMPLES", 5003)  # 10 blocks
    streamed = sim.simulate_session(tmp_path / "streamed", _session_settings())
    assert whole.render["room"]["image_block_samples"] > 3 * FS
    assert streamed.render["room"]["image_block_samples"] == 5003
    a, b = load_session(whole.manifest), load_session(streamed.manifest)
    for name in ("piano", "sax", "violin"):  # not streamed through the room: the same samples
        for path_a, path_b in ((a.truth.dry[name], b.truth.dry[name]), (a.source(name).reference,
                                                                          b.source(name).reference)):
            np.testing.assert_array_equal(audio_io.read_audio(path_a)[0], audio_io.read_audio(path_b)[0])
    files = [(a.mics[0].file, b.mics[0].file)]
    files += [(a.truth.images[n], b.truth.images[n]) for n in a.truth.images]
    for path_a, path_b in files:
        x_a, x_b = audio_io.read_audio(path_a)[0], audio_io.read_audio(path_b)[0]
        assert x_b.shape == x_a.shape == (7, 3 * FS)
        # float32 files rounded from float64 images equal to float64 rounding
        np.testing.assert_allclose(x_b, x_a, rtol=0, atol=2 * np.finfo(np.float32).eps * np.abs(x_a).max())
    mics = audio_io.read_audio(b.mics[0].file)[0]
    images = sum(audio_io.read_audio(b.truth.images[n])[0] for n in b.truth.images)
    assert np.abs(images - mics).max() <= 4 * np.finfo(np.float32).eps * np.abs(mics).max()
    assert not list((tmp_path / "streamed").rglob("*.part"))


def test_an_interrupted_render_leaves_no_audio_under_a_final_name(tmp_path, monkeypatch):
    monkeypatch.setattr(trio, "IMAGE_BLOCK_SAMPLES", FS // 2)

    class Interrupted(Exception):
        pass

    calls = []

    def stop_in_the_third_block(stage, done, total, detail=""):
        calls.append(stage)
        if calls.count("room images") == 4:  # after the RIRs and two blocks were written
            raise Interrupted

    with pytest.raises(Interrupted):
        sim.simulate_session(tmp_path, _session_settings(), callback=stop_in_the_third_block)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [], left  # no mics, images or dry signals, no temporary files, no render.json


# ------------------------------------------------------------------------ the streaming writer simulate uses


def test_block_writer_writes_what_write_audio_writes(tmp_path):
    from studio_sep.io import audio as audio_io

    x_CS = np.random.default_rng(3).standard_normal((3, 10007)) * 0.1
    audio_io.write_audio(tmp_path / "whole.wav", x_CS, FS)
    with audio_io.open_audio_writer(tmp_path / "blocks.wav", FS, n_channels=3, n_samples=10007) as out:
        for start in range(0, 10007, 999):
            out.write(x_CS[:, start:start + 999])
    whole, sr = audio_io.read_audio(tmp_path / "whole.wav", dtype="float32")
    blocks, _ = audio_io.read_audio(tmp_path / "blocks.wav", dtype="float32")
    assert sr == FS and np.array_equal(blocks, whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.wav", "whole.wav"]


@pytest.mark.parametrize("failure", ["short", "too long", "nan", "exception"])
def test_block_writer_leaves_the_previous_file_on_failure(tmp_path, failure):
    from studio_sep.io import audio as audio_io
    from studio_sep.util.errors import AudioError

    path = tmp_path / "x.wav"
    audio_io.write_audio(path, np.full((2, 50), 0.25), FS)
    block = np.zeros((2, 60))
    expected = {"short": ValueError, "too long": ValueError, "nan": AudioError, "exception": KeyError}
    expected = expected[failure]
    with pytest.raises(expected), audio_io.open_audio_writer(path, FS, n_channels=2, n_samples=100) as out:
        out.write(block)
        if failure == "too long":
            out.write(block)
        elif failure == "nan":
            out.write(np.full((2, 40), np.nan))
        elif failure == "exception":
            raise KeyError("stop")
    x, _ = audio_io.read_audio(path)
    assert x.shape == (2, 50) and np.all(x == 0.25)
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]
