"""The arrays a separation starts from: the mics' signals at the native and the processing
rate and their STFT (of the session or of one time block), and the solo reference takes'
power spectrograms."""

from __future__ import annotations

import numpy as np

from studio_sep.dsp.resample import resample
from studio_sep.io import audio as audio_io
from studio_sep.session import Session, load_mics
from studio_sep.stages.settings import ResolvedSettings


def stft_of(x_proc: np.ndarray, settings: ResolvedSettings) -> np.ndarray:
    """STFT (F, T, M) of processing-rate signals with the run's n_fft and hop."""
    from studio_sep.dsp import stft

    return stft.stft(x_proc, n_fft=settings.n_fft, hop=settings.hop)


def mic_signals(session: Session, settings: ResolvedSettings, start: int = 0, stop: int | None = None):
    """Mics (native), resampled mics and their STFT for native samples [start, stop)
    (the whole session by default)."""
    x_MS = load_mics(session, start=start, stop=stop)
    x_proc = resample(x_MS, settings.sample_rate, settings.processing_sample_rate)
    return x_MS, x_proc, stft_of(x_proc, settings)


#: WPE (nara-wpe): prediction taps and delay in frames, iterations.
WPE_TAPS, WPE_DELAY, WPE_ITERATIONS = 10, 3, 3


def fit_spectrogram(X_FTM: np.ndarray, settings: ResolvedSettings) -> np.ndarray:
    """The STFT the model is fitted to: the mics' own, or with ``settings.wpe`` the mics
    dereverberated by weighted prediction error (nara-wpe; the late reverberation of every
    mic predicted from the delayed past of all mics, ``WPE_TAPS`` frames from
    ``WPE_DELAY`` on, and removed). The images are always made from the mics' own STFT."""
    if not settings.wpe:
        return X_FTM
    from nara_wpe.wpe import wpe  # present: resolve_settings checked

    Y_FMT = np.ascontiguousarray(np.transpose(X_FTM, (0, 2, 1)))
    return np.ascontiguousarray(np.transpose(wpe(Y_FMT, taps=WPE_TAPS, delay=WPE_DELAY, iterations=WPE_ITERATIONS),
                                             (0, 2, 1)))


def reference_power(session: Session, settings: ResolvedSettings) -> list[np.ndarray]:
    """Power spectrogram (F, T_n) of every source's solo reference take at the processing rate."""
    from studio_sep.dsp import stft

    powers = []
    for source in session.sources:
        ref, sr = audio_io.read_audio(source.reference)
        ref = resample(ref, sr, settings.processing_sample_rate)
        R = stft.stft(ref, n_fft=settings.n_fft, hop=settings.hop)[:, :, 0]
        powers.append(np.abs(R) ** 2)
    return powers
