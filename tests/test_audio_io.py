"""audio_io: round trips, atomic writes, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from studio_sep.io import audio as audio_io
from studio_sep.util.atomic import atomic_path
from studio_sep.util.errors import AudioError


@pytest.mark.parametrize(("subtype", "atol"), [("float32", 1e-7), ("float64", 0.0), ("pcm24", 2**-23), ("pcm16", 2**-15)])
def test_round_trip_keeps_shape_rate_and_samples(tmp_path: Path, subtype: str, atol: float) -> None:
    rng = np.random.default_rng(1)
    x_CS = rng.uniform(-0.9, 0.9, size=(3, 1001))  # odd length
    path = audio_io.write_audio(tmp_path / "sub" / "x.wav", x_CS, 16000, subtype=subtype)
    y_CS, sr = audio_io.read_audio(path)
    assert sr == 16000 and y_CS.shape == (3, 1001)
    np.testing.assert_allclose(y_CS, x_CS, atol=atol, rtol=1e-6)
    info = audio_io.audio_info(path)
    assert (info.n_channels, info.n_samples, info.sample_rate) == (3, 1001, 16000)
    assert info.duration_s == pytest.approx(1001 / 16000)


def test_read_selected_channels_in_order(tmp_path: Path) -> None:
    x_CS = np.arange(12, dtype=float).reshape(3, 4) / 16
    path = audio_io.write_audio(tmp_path / "x.wav", x_CS, 8000, subtype="float64")
    y_CS, _ = audio_io.read_audio(path, channels=[2, 0])
    np.testing.assert_array_equal(y_CS, x_CS[[2, 0]])
    with pytest.raises(AudioError, match="channel 4 requested but the file has 3"):
        audio_io.read_audio(path, channels=[3])


def test_refuses_nan_and_leaves_no_file(tmp_path: Path) -> None:
    x = np.zeros((1, 100))
    x[0, 50] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        audio_io.write_audio(tmp_path / "bad.wav", x, 16000)
    assert list(tmp_path.iterdir()) == []


def test_refuses_clipping_for_integer_formats(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="exceeds full scale"):
        audio_io.write_audio(tmp_path / "loud.wav", np.full((1, 10), 1.5), 16000, subtype="pcm24")
    audio_io.write_audio(tmp_path / "loud.wav", np.full((1, 10), 1.5), 16000, subtype="float32")
    assert audio_io.read_audio(tmp_path / "loud.wav")[0].max() == pytest.approx(1.5)


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "x.wav"
    audio_io.write_audio(target, np.full((1, 10), 0.25), 16000)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]
    np.testing.assert_array_equal(audio_io.read_audio(target)[0], np.full((1, 10), 0.25))


def test_find_nonfinite_reports_first_bad_sample(tmp_path: Path) -> None:
    import soundfile as sf

    x = np.zeros((70000, 2), dtype=np.float32)  # spans two scan blocks
    x[66000, 1] = np.inf
    sf.write(str(tmp_path / "x.wav"), x, 16000, subtype="FLOAT")
    assert audio_io.find_nonfinite(tmp_path / "x.wav") == (66000, 1)
    assert audio_io.find_nonfinite(tmp_path / "x.wav", channels=[0]) is None


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="file not found"):
        audio_io.audio_info(tmp_path / "nope.wav")
    (tmp_path / "junk.wav").write_text("hello")
    with pytest.raises(AudioError, match="not a readable audio file"):
        audio_io.audio_info(tmp_path / "junk.wav")


def test_atomic_writes_give_files_the_usual_permissions(tmp_path) -> None:
    import os

    from studio_sep.util.atomic import write_text_atomic

    write_text_atomic(tmp_path / "x.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask
