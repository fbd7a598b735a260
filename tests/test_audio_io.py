"""audio_io: round trips, atomic writes, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from studio_sep.io import audio as audio_io
from studio_sep.util.atomic import atomic_path
from studio_sep.util.errors import AudioError


# pcm16 is TPDF-dithered: up to 1.5 LSB from the input (test_pcm16_is_tpdf_dithered)
@pytest.mark.parametrize(("subtype", "atol"), [("float32", 1e-7), ("float64", 0.0), ("pcm24", 2**-23),
                                               ("pcm16", 1.5 * 2**-15)])
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


def _quiet_sine(rate: int = 48000, seconds: float = 2.0, amplitude_lsb: float = 4.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([amplitude_lsb / 32768 * np.sin(2 * np.pi * 1000 * t + 0.3)] * 2)  # whole cycles


def _harmonics_lsb(e: np.ndarray, rate: int = 48000) -> float:
    """The largest of the error's components at 2…9 kHz harmonics of the 1 kHz sine, in LSB."""
    spectrum = 2 * np.abs(np.fft.rfft(e)) / e.size
    return float(max(spectrum[k * 1000 * e.size // rate] for k in range(2, 10)))


def test_pcm16_is_tpdf_dithered(tmp_path: Path) -> None:
    x = _quiet_sine()
    audio_io.write_audio(tmp_path / "d.wav", x, 48000, subtype="pcm16")
    y, _ = audio_io.read_audio(tmp_path / "d.wav")
    e = (y - x) * 32768  # in LSB
    # TPDF dither (variance 2/12 LSB^2) plus the rounding it decorrelates (1/12): 3/12 in all
    assert e.mean() == pytest.approx(0.0, abs=0.01)
    assert e.var() == pytest.approx(3 / 12, abs=0.01)
    # the error does not depend on the signal: the same variance wherever the samples fall between steps
    fraction = (x * 32768) % 1.0
    for lo in (0.0, 0.25, 0.5, 0.75):
        part = e[(fraction >= lo) & (fraction < lo + 0.25)]
        assert part.var() == pytest.approx(3 / 12, abs=0.02)
    # no truncation distortion: no harmonics of the sine in the error, where plain rounding puts them
    assert _harmonics_lsb(e[0]) < 0.02
    assert _harmonics_lsb(np.round(x[0] * 32768) - x[0] * 32768) > 0.1
    # block by block gives the whole file's samples; digital silence stays silent
    with audio_io.open_audio_writer(tmp_path / "d.wav", 48000, n_channels=2, n_samples=x.shape[1] + 100,
                                    subtype="pcm16") as writer:
        writer.write(x[:, :12345])
        writer.write(x[:, 12345:])
        writer.write(np.zeros((2, 100)))
    z, _ = audio_io.read_audio(tmp_path / "d.wav")
    np.testing.assert_array_equal(z[:, :x.shape[1]], y)
    assert np.all(z[:, x.shape[1]:] == 0)


def test_flac_is_24_bit_lossless_and_refuses_bext(tmp_path: Path) -> None:
    import soundfile as sf

    x = 1000 * _quiet_sine()
    path = audio_io.write_audio(tmp_path / "x.flac", x, 48000, subtype="flac")
    assert audio_io.extension("flac") == ".flac" and audio_io.extension("pcm16") == ".wav"
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.frames) == ("FLAC", "PCM_24", x.shape[1])
    y, rate = audio_io.read_audio(path)
    assert rate == 48000 and np.max(np.abs(y - x)) <= 0.5 / 2**23 + 1e-12
    with pytest.raises(ValueError, match="bext chunk goes into WAV files only"):
        audio_io.write_audio(tmp_path / "b.flac", x, 48000, subtype="flac", bext=audio_io.Bext())
