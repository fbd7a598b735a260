"""The training-data augmentation (§3.3.2): active audio, scattering statistics, the
keyword filter, Slakh metadata, and a small seeded dataset on disk (TimGM6mb)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from studio_sep.data import active, instruments, stems
from studio_sep.data import dataset as D
from studio_sep.util.errors import InputError

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
FS = stems.SAMPLE_RATE
needs_soundfont = pytest.mark.skipif(not SOUNDFONT.is_file(), reason="TimGM6mb.sf2 not installed")


def tone(seconds: float, fs: int = FS, f0: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * fs))) / fs
    return amplitude * np.sin(2 * np.pi * f0 * t)


# ---------------------------------------------------------------------------- active audio


def test_active_region_removes_exactly_the_silent_gaps():
    parts = [tone(1.0), np.zeros(FS), tone(1.5), np.zeros(FS // 2), tone(1.0)]
    w = np.concatenate(parts)
    mask = active.active_mask(w, FS, cutoff_hz=10.0, threshold_db=-40.0)
    edges = np.cumsum([0] + [p.size for p in parts])
    margin = int(0.1 * FS)  # envelope smearing of a 10 Hz zero-phase low-pass
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        inner = mask[a + margin: b - margin]
        assert inner.all() if k % 2 == 0 else not inner.any(), f"part {k}"
    kept = active.extract_active(w, FS)
    assert kept.dtype == np.float32
    assert abs(kept.size - 3.5 * FS) <= 4 * margin
    assert active.extract_active(np.zeros(FS), FS).size == 0


# ---------------------------------------------------------------------------- scattering


def test_scatter_statistics_over_many_draws():
    rng = np.random.default_rng(1)
    stem = rng.standard_normal(20 * FS)
    n_samples, n_bins = 10 * FS, 5
    bin_len = n_samples // n_bins
    draws, placed = 0, 0
    n_runs = 600
    for _ in range(n_runs):
        track, insertions, wanted = active.scatter(stem, rng, n_samples=n_samples, sample_rate=FS)
        assert track.shape == (n_samples,) and len(wanted) == n_bins
        draws += sum(wanted)
        placed += len(insertions)
        previous_end = 0
        previous_bin = -1
        for start, stop in insertions:
            b = start // bin_len
            assert b > previous_bin and wanted[b]  # one segment per bin, only where the draw asked
            assert start >= previous_end  # after the previous segment of this instrument
            assert stop - start <= 3 * FS and stop <= n_samples
            assert np.all(track[start:stop] != 0)
            previous_end, previous_bin = stop, b
        covered = np.zeros(n_samples, dtype=bool)
        for start, stop in insertions:
            covered[start:stop] = True
        assert np.all(track[~covered] == 0)
    fraction = draws / (n_runs * n_bins)
    assert abs(fraction - 0.8) < 0.025
    assert 0.6 < placed / (n_runs * n_bins) <= fraction  # a bin fully covered by the last segment is skipped


# ---------------------------------------------------------------------------- keyword filter, Slakh


def test_keyword_filter_rejects_electric_and_synth():
    assert stems.classify_name("Acoustic Grand Piano") == ("piano", True)
    assert stems.classify_name("Violin") == ("violin", True)
    assert stems.classify_name("Tenor Sax") == ("saxophone", True)
    assert stems.classify_name("Electric Piano 1") == ("piano", False)
    assert stems.classify_name("Synth Strings 1") == ("violin", False)
    assert stems.classify_name("Distortion Guitar")[0] == "guitar"


SLAKH_META = """UUID: 0123
audio_dir: stems
normalization_factor: -13.0
stems:
  S00:
    audio_rendered: true
    inst_class: Piano
    is_drum: false
    midi_program_name: Acoustic Grand Piano
    program_num: 0
  S01:
    audio_rendered: true
    inst_class: Piano
    is_drum: false
    midi_program_name: Electric Piano 1
    program_num: 4
  S02:
    audio_rendered: true
    inst_class: Strings (continued)
    is_drum: false
    midi_program_name: Synth Strings 1
    program_num: 50
  S03:
    audio_rendered: true
    inst_class: Strings
    is_drum: false
    midi_program_name: Violin
    program_num: 40
  S04:
    audio_rendered: true
    inst_class: Reed
    is_drum: false
    midi_program_name: Tenor Sax
    program_num: 66
  S05:
    audio_rendered: true
    inst_class: Drums
    is_drum: true
    midi_program_name: Drums
    program_num: 0
  S06:
    audio_rendered: false
    inst_class: Pipe
    is_drum: false
    midi_program_name: Flute
    program_num: 73
  S07:
    audio_rendered: true
    inst_class: Guitar
    is_drum: false
    midi_program_name: Acoustic Guitar (nylon)
    program_num: 24
target_file: Track00001.mid
"""


def test_slakh_folder_keyword_filter_and_resampling(tmp_path):
    track = tmp_path / "Track00001"
    (track / "stems").mkdir(parents=True)
    (track / "metadata.yaml").write_text(SLAKH_META)
    entries = stems.parse_slakh_metadata(SLAKH_META)
    assert entries["S05"]["is_drum"] is True and entries["S04"]["program_num"] == 66
    assert entries["S07"]["midi_program_name"] == "Acoustic Guitar (nylon)"
    # 2 s of tone, 1 s of silence, at Slakh's 44.1 kHz
    audio = np.concatenate([tone(2.0, 44100), np.zeros(44100)]).astype(np.float32)
    for stem_id in ("S00", "S01", "S02", "S03", "S04", "S05", "S07"):  # S06 was not rendered
        sf.write(track / "stems" / f"{stem_id}.flac", audio, 44100)
    pool = stems.build_stem_pool(phrases_per_program=0, slakh=tmp_path)
    by_file = {Path(s.source).stem: s for s in pool.stems}
    assert sorted(by_file) == ["S00", "S01", "S02", "S03", "S04", "S07"]
    roles = {k: (s.label, s.family, s.is_target) for k, s in by_file.items()}
    assert roles["S00"] == ("piano", "piano", True)
    assert roles["S01"] == ("piano", "piano", False)
    assert roles["S02"][1:] == ("violin", False)
    assert roles["S03"] == ("violin", "violin", True)
    assert roles["S04"] == ("saxophone", "saxophone", True)
    assert roles["S07"] == ("guitar", "guitar", False)
    assert pool.target_classes() == ["violin", "saxophone", "piano"]
    active = pool.active_audio(by_file["S00"])
    assert abs(active.size - 2 * FS) < 0.1 * FS  # resampled to 16 kHz, silence cut
    ex = D.make_example(pool, np.random.default_rng(0))
    target = next(s for s in pool.stems if s.source == ex.meta["target_source"])
    assert target.is_target
    assert all(i["class"] != ex.meta["class"] for i in ex.meta["interferers"])


def test_missing_slakh_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="Slakh2100 folder not found"):
        stems.build_stem_pool(phrases_per_program=0, slakh=tmp_path / "nope")


# ---------------------------------------------------------------------------- a seeded dataset


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    if not SOUNDFONT.is_file():
        pytest.skip("TimGM6mb.sf2 not installed")
    folder = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(5)
    recordings = []
    for k in range(2):  # two solo "takes" of violin: the violin_rec variant
        x = np.concatenate([tone(3.0, 48000, 440 * (k + 1)), np.zeros(48000), tone(3.0, 48000, 660)])
        x = (x * (1 + 0.1 * rng.standard_normal(x.size))).astype(np.float32)
        path = folder / f"violin_take{k}.wav"
        sf.write(path, x, 48000)
        recordings.append((path, "violin"))
    return stems.build_stem_pool(soundfont=SOUNDFONT, phrases_per_program=1, phrase_s=(5.0, 7.0),
                             recordings=recordings, seed=0)


@pytest.fixture(scope="module")
def dataset(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "data"
    seen = []
    meta = D.generate_dataset(out, pool, n_train=16, n_val=2, n_test=2, seed=3,
                              progress=lambda stage, done, total: seen.append((stage, done, total)))
    return out, meta, seen


def test_pool_has_every_class_and_rec_variants(pool):
    counts = pool.counts()
    assert counts["violin_rec"] == {"stems": 2, "targets": 2}
    assert counts["violin"]["targets"] == 6 and counts["saxophone"]["targets"] == 4
    assert counts["piano"]["targets"] == 3 and counts["flute"] == {"stems": 2, "targets": 0}
    assert pool.target_classes() == ["violin", "saxophone", "piano"]


def test_dataset_files_and_metadata(dataset):
    out, meta, seen = dataset
    assert meta["format"] == "studio-sep.augment/1" and meta["sample_rate"] == FS
    assert meta["splits"] == {"train": 16, "val": 2, "test": 2}
    assert meta["classes"] == ["violin", "saxophone", "piano"]
    assert "flute" in meta["interferer_classes"] and "violin_rec" not in meta["interferer_classes"]
    assert seen[-1] == ("test", 2, 2) and ("train", 16, 16) in seen
    on_disk = json.loads((out / "dataset.json").read_text())
    assert on_disk == meta
    loaded, examples = D.load_dataset_index(out)
    assert loaded == meta and [len(examples[s]) for s in D.SPLITS] == [16, 2, 2]
    for split, docs in examples.items():
        for i, doc in enumerate(docs):
            assert doc["id"] == f"{i:06d}" and doc["split"] == split
            assert doc["prompt"] == doc["class"] in instruments.TARGET_CLASSES
            assert doc["target_label"] in (doc["class"], doc["class"] + "_rec")
            assert 1 <= len(doc["interferers"]) <= 3
            assert all(it["class"] != doc["class"] for it in doc["interferers"])
            for kind in ("mixture", "target", "reference"):
                info = sf.info(doc[kind])
                assert Path(doc[kind]).is_absolute()
                assert (info.samplerate, info.frames, info.channels, info.subtype) == (FS, 10 * FS, 1, "FLOAT")
            # insertions: inside their bin, after the previous one, at most 3 s
            for n, segments in doc["insertions"].items():
                previous_end = 0.0
                for start, stop in segments:
                    assert start >= previous_end - 1e-6 and stop - start <= 3.0 + 1e-6 and stop <= 10.0
                    assert doc["bin_draws"][n][int(start // 2.0)]
                    previous_end = stop
            if doc["class"] != "violin" or doc["target_label"] == "violin_rec":
                assert not doc["reference_same_stem"] and doc["reference_source"] != doc["target_source"]
    docs = [d for split in examples.values() for d in split]
    draws = [b for d in docs for wanted in d["bin_draws"].values() for b in wanted]
    assert abs(np.mean(draws) - 0.8) < 0.1
    assert any(d["target_label"] == "violin_rec" for d in docs) or not any(d["class"] == "violin" for d in docs)


def test_mixture_is_target_plus_interferers(pool, dataset):
    out, _, _ = dataset
    _, examples = D.load_dataset_index(out)
    for i in range(4):
        ex = D.make_example(pool, np.random.default_rng([3, 0, i]))  # train example i
        doc = examples["train"][i]
        mixture, _ = sf.read(doc["mixture"], dtype="float32")
        target, _ = sf.read(doc["target"], dtype="float32")
        assert np.array_equal(mixture, ex.mixture_S) and np.array_equal(target, ex.target_S)
        np.testing.assert_allclose(mixture - target, ex.interferers_NS.sum(axis=0), atol=1e-6)
        assert ex.interferers_NS.shape[0] == len(doc["interferers"])
        assert abs(np.max(np.abs(mixture)) - 0.9) < 1e-6  # normalised mixture
        # the target is silent exactly outside its insertions
        covered = np.zeros(10 * FS, dtype=bool)
        for start, stop in doc["insertions"]["0"]:
            covered[int(round(start * FS)): int(round(stop * FS))] = True
        assert np.all(target[~covered] == 0) and np.any(target[covered] != 0)


def test_same_seed_same_bytes_other_seed_other_examples(pool, dataset, tmp_path):
    out, _, _ = dataset
    again = tmp_path / "again"
    D.generate_dataset(again, pool, n_train=3, seed=3)  # fewer examples: the first ones are the same
    for name in ("000000_mixture.wav", "000001_target.wav", "000002_reference.wav", "000002.json"):
        assert (again / "train" / name).read_bytes() == (out / "train" / name).read_bytes()
    other = tmp_path / "other"
    D.generate_dataset(other, pool, n_train=2, seed=4)
    assert (other / "train" / "000000_mixture.wav").read_bytes() != (out / "train" / "000000_mixture.wav").read_bytes()


def test_resume_skips_complete_examples(pool, tmp_path):
    out = tmp_path / "ds"
    D.generate_dataset(out, pool, n_train=4, seed=7)
    complete = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("000000*")}
    original = (out / "train" / "000002_mixture.wav").read_bytes()
    (out / "train" / "000002.json").unlink()  # example 2 interrupted before its JSON
    (out / "train" / "000002_mixture.wav").unlink()
    (out / "dataset.json").unlink()
    with pytest.raises(InputError, match="did not finish"):
        D.load_dataset_index(out)
    meta = D.generate_dataset(out, pool, n_train=5, seed=7)  # resume, and one more
    assert {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("000000*")} == complete
    assert (out / "train" / "000002_mixture.wav").read_bytes() == original
    assert meta["splits"]["train"] == 5 and (out / "train" / "000004.json").is_file()


def test_other_settings_into_the_same_folder_are_refused(pool, tmp_path):
    out = tmp_path / "ds"
    D.generate_dataset(out, pool, n_train=1, seed=7)
    with pytest.raises(InputError, match="other settings") as info:
        D.generate_dataset(out, pool, n_train=1, seed=8)
    assert str(out) in str(info.value) and "seed" in str(info.value)
    with pytest.raises(InputError, match="other settings"):
        D.generate_dataset(out, pool, n_train=1, seed=7, settings=D.AugmentSettings(max_interferers=2))
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds no augmentation dataset"):
        D.generate_dataset(stranger, pool, n_train=1)
    with pytest.raises(InputError, match="not found"):
        D.load_dataset_index(tmp_path / "missing")


@needs_soundfont
def test_session_references_join_as_rec_variants(rendered_session):
    pool = stems.build_stem_pool(phrases_per_program=0, sessions=[rendered_session])
    assert sorted(pool.counts()) == ["piano_rec", "saxophone_rec", "violin_rec"]
    assert all(s.is_target for s in pool.stems)
    ex = D.make_example(pool, np.random.default_rng(0))
    assert ex.meta["prompt"] == ex.meta["class"] and ex.meta["target_label"] == ex.meta["class"] + "_rec"
    assert ex.meta["reference_same_stem"]  # one take per class: the reference is the target's own stem
    assert all(i["class"] != ex.meta["class"] for i in ex.meta["interferers"])


def test_importing_the_augmentation_does_not_need_torch():
    import subprocess
    import sys

    code = ("import sys; import studio_sep.data.dataset, studio_sep.data.stems; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wav_bytes_do_not_depend_on_the_time_of_writing(tmp_path):
    import time

    x = np.linspace(-0.5, 0.5, 1000).astype(np.float32)
    D._write_wav(tmp_path / "a.wav", x, FS)
    time.sleep(1.1)  # libsndfile's PEAK chunk holds the time in seconds
    D._write_wav(tmp_path / "b.wav", x, FS)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    y, fs = sf.read(tmp_path / "a.wav", dtype="float32")
    assert fs == FS and np.array_equal(x, y)
