"""The scene zoo: deterministic scenes that reach every axis value, rendered into sessions whose
manifest describes the recording as a user would (imperfectly); the separation never reads the
render's record or the ground truth."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from studio_sep.io import audio as audio_io
from studio_sep.session import load_session
from studio_sep.sim.zoo_scenes import AXES, ZOO_SEED, axis_values, draw_scene

DEFAULT_ZOO = 40  # benchmarks/zoo.py's default number of sessions


def test_scenes_are_deterministic_per_seed() -> None:
    assert draw_scene(7).to_dict() == draw_scene(7).to_dict()
    assert draw_scene(7, seed=1).to_dict() == draw_scene(7, seed=1).to_dict()
    assert draw_scene(7, seed=1).to_dict() != draw_scene(7, seed=2).to_dict()
    assert draw_scene(7).to_dict() != draw_scene(8).to_dict()


@pytest.mark.parametrize("seed", [ZOO_SEED, 1, 2])
def test_the_default_zoo_reaches_every_axis_value(seed: int) -> None:
    scenes = [draw_scene(i, seed) for i in range(DEFAULT_ZOO)]
    for axis, values in AXES.items():
        assert {s.axes[axis] for s in scenes} == set(values), axis


def test_a_zoo_of_a_few_instruments_keeps_the_axes_and_plays_only_those() -> None:
    """The trio zoo (issue #17: a prior that knows three classes): the same axes as the whole
    zoo, every pitched source one of the pool, a scene larger than the pool plays some twice."""
    from studio_sep.sim.zoo_scenes import INSTRUMENTS

    pool = ("piano", "violin", "sax")
    scenes = [draw_scene(i, instruments=pool) for i in range(DEFAULT_ZOO)]
    for i, s in enumerate(scenes):
        assert s.axes == axis_values(i) and s.name == f"zoo_{ZOO_SEED}_{i:03d}_piano-violin-sax"
        assert len(s.sources) == int(s.axes["n_sources"])
        programs = [src.program for src in s.sources if src.kind == "gm"]
        assert set(programs) <= {INSTRUMENTS[p][0] for p in pool}
        assert len({src.name for src in s.sources}) == len(s.sources)  # a repeated instrument gets its own name
    assert any(int(s.axes["n_sources"]) > len(pool) for s in scenes)
    assert draw_scene(3).instruments is None and draw_scene(3).name == f"zoo_{ZOO_SEED}_003"
    with pytest.raises(ValueError, match="unknown instrument 'kazoo'"):
        draw_scene(0, instruments=("piano", "kazoo"))


def test_axes_of_one_length_do_not_move_in_lockstep() -> None:
    values = [axis_values(i) for i in range(DEFAULT_ZOO)]
    axes = list(AXES)
    for a in axes:
        for b in axes:
            if a < b and len(AXES[a]) == len(AXES[b]):
                pairs = {(str(v[a]), str(v[b])) for v in values}
                assert len(pairs) > len(AXES[a]), (a, b)  # not a one-to-one relabelling


def test_scenes_are_what_their_axes_say() -> None:
    for i in range(DEFAULT_ZOO):
        s = draw_scene(i)
        volume = float(np.prod(s.dimensions_m))
        low, high = {"small": (40, 90), "medium": (90, 200), "large": (200, 400)}[s.axes["room_size"]]
        assert low <= volume <= high
        low, high = (float(v) for v in s.axes["rt60"].split("-"))
        assert low <= s.rt60_s <= high
        assert len(s.sources) == s.axes["n_sources"] and 2 <= len(s.mics) <= 12
        if s.axes["layout"] == "pair":
            assert [m.name for m in s.mics] == ["pair_l", "pair_r"]
            assert abs(s.mics[0].position_m[1] - s.mics[1].position_m[1]) == pytest.approx(0.17)
        if s.axes["spot_mics"] == "yes":
            assert all(src.spot_mic in {m.name for m in s.mics} for src in s.sources)
        assert (s.axes["material"] == "with_speech") == any(src.kind == "speech" for src in s.sources)
        recorded = {m.pattern for m in s.mics}
        typed = {m.typed_pattern for m in s.mics}
        expect = {"omni": ({"omni"}, {"omni"}), "omni_typed_cardioid": ({"omni"}, {"cardioid"}),
                  "mixed_typed_omni": (None, {"omni"}), "mixed": (None, None)}[s.axes["patterns"]]
        assert expect[0] is None or recorded == expect[0]
        assert expect[1] is None or typed == expect[1]
        if s.axes["patterns"] in ("mixed", "mixed_typed_omni"):
            assert recorded - {"omni"}
        offsets = np.array([np.subtract(m.typed_position_m, m.position_m) for m in s.mics]
                           + [np.subtract(x.typed_position_m, x.position_m) for x in s.sources])
        if s.axes["position_error_cm"] == 0:
            assert np.all(offsets == 0)
        else:
            assert np.any(offsets != 0)


def test_typed_coordinates_are_off_by_sigma() -> None:
    for sigma_cm in (5, 20):
        offsets = []
        for i in range(DEFAULT_ZOO):
            s = draw_scene(i)
            if s.axes["position_error_cm"] == sigma_cm:
                offsets += [np.subtract(m.typed_position_m, m.position_m) for m in s.mics]
        rms = float(np.sqrt(np.mean(np.square(offsets))))
        assert 0.6 * sigma_cm / 100 < rms < 1.3 * sigma_cm / 100


def test_a_pair_alone_separates_two_sources_without_spots() -> None:
    for i in range(DEFAULT_ZOO):
        values = axis_values(i)
        if values["layout"] == "pair":
            assert values["n_sources"] == 2 and values["spot_mics"] == "no"


def _small_scene():
    """A scene of the zoo made cheap to render: TimGM6mb, 16 kHz, a short RT60, a voice."""
    i = next(i for i in range(DEFAULT_ZOO) if axis_values(i)["material"] == "with_speech"
             and axis_values(i)["layout"] != "pair" and axis_values(i)["n_sources"] >= 3)
    scene = draw_scene(i)
    return dataclasses.replace(scene, soundfont="TimGM6mb", sample_rate=16000, rt60_s=0.25, snr_db=40.0)


@pytest.fixture(scope="module")
def zoo_session(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None or not Path("/usr/share/sounds/sf2/TimGM6mb.sf2").is_file():
        pytest.skip("espeak-ng or TimGM6mb not installed (scripts/install-system-deps.sh)")
    from studio_sep.sim.zoo import render_scene

    return render_scene(_small_scene(), tmp_path_factory.mktemp("zoo") / "scene", duration_s=3.0)


def test_a_rendered_scene_is_a_session_with_truth_and_noise(zoo_session: Path) -> None:
    scene = _small_scene()
    session = load_session(zoo_session)
    assert [m.name for m in session.mics] == [m.name for m in scene.mics]
    assert [m.pattern for m in session.mics] == [m.typed_pattern for m in scene.mics]
    typed = np.array([m.position_m for m in session.mics])
    assert np.allclose(typed, [m.typed_position_m for m in scene.mics], atol=5e-4)  # typed to the millimetre
    assert session.n_samples == 3 * 16000 and session.sample_rate == 16000
    x_MS, _ = audio_io.read_audio(session.mics[0].file)
    truth = np.stack([audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources])
    noise = x_MS - truth.sum(axis=0)
    snr = 10 * np.log10(np.mean(truth.sum(axis=0) ** 2, axis=1) / np.mean(noise**2, axis=1))
    assert np.allclose(snr, scene.snr_db, atol=0.5)
    voice = next(s for s in scene.sources if s.kind == "speech")
    assert np.abs(truth[[s.name for s in scene.sources].index(voice.name)]).max() > 1e-3  # espeak-ng spoke
    record = json.loads((zoo_session.parent / "render.json").read_text())
    assert record["key"]["scene"]["axes"] == json.loads(json.dumps(scene.axes))
    assert 0.15 < record["measured_rt60_s"] < 0.35
    assert "scene zoo" in session.description and "pattern" not in session.description


def test_rendering_again_reuses_the_folder(zoo_session: Path) -> None:
    from studio_sep.sim.zoo import render_scene

    before = (zoo_session.parent / "render.json").stat().st_mtime_ns
    assert render_scene(_small_scene(), zoo_session.parent, duration_s=3.0) == zoo_session
    assert (zoo_session.parent / "render.json").stat().st_mtime_ns == before


def test_separation_reads_neither_the_render_record_nor_the_truth(zoo_session: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    import soundfile

    from studio_sep.stages import SeparationOptions, separate_session

    session = load_session(zoo_session)
    opened: list[str] = []
    recording = [True]

    def audit(event, args):
        if recording[0] and event == "open" and isinstance(args[0], (str, bytes, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(audit)  # every open() in this process
    real_init = soundfile.SoundFile.__init__

    def spy(self, file, *args, **kwargs):  # libsndfile opens files in C, out of the audit's sight
        opened.append(str(file))
        real_init(self, file, *args, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "__init__", spy)
    try:
        separate_session(session, tmp_path, SeparationOptions(n_iter=2))
    finally:
        recording[0] = False
    folder = str(zoo_session.parent)
    assert any(p.endswith("mics.wav") for p in opened)  # the spy saw the reads
    assert not [p for p in opened if p.endswith("render.json")]
    assert not [p for p in opened if p.startswith(folder + "/truth")]
