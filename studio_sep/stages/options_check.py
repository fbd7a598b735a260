"""Checks of a separation's settings that do not wait for the separation: the command
line's options, once, before any session of a batch (:func:`check_options`), and a
session's length against the STFT it will be cut into (:func:`check_session_length`),
before anything is read or written."""

from __future__ import annotations

import math

from studio_sep.dsp.backend import resolve_device
from studio_sep.dsp.stft import check_fft_settings, n_frames
from studio_sep.io.audio import audio_info
from studio_sep.session import DEVICES, DTYPES, INITS, PRIORS, SPATIAL_INITS, SeparationSettings, Session
from studio_sep.session.manifest import MIN_PROCESSING_RATE
from studio_sep.util.errors import InputError

#: The command-line options whose names are not their field's (``--<field with dashes>``).
OPTION_NAMES = {"n_iter": "--iterations", "processing_sample_rate": "--processing-rate"}


def option_name(field: str) -> str:
    """The command-line option that sets a settings field: ``n_fft`` → ``--n-fft``."""
    return OPTION_NAMES.get(field) or "--" + field.replace("_", "-")


def check_init_names(init: tuple[str, ...], field: str = "init") -> None:
    """Every init is known, and the blind (circular) spatial model is not combined with a
    guided one (geometry, spot and delays may go together: a start each, the best fit kept)."""
    unknown = [i for i in init if i not in INITS]
    if unknown:
        raise InputError(None, field, f"unknown init {unknown[0]!r}", f"use a combination of {', '.join(INITS)}")
    other = next((kind for kind in SPATIAL_INITS if kind in init), None)
    if "circular" in init and other:
        raise InputError(None, field, f"circular and {other} both set the spatial model",
                         "pick one of them (geometry, spot and delays together: a start each, the best fit kept)")


def check_options(options: SeparationSettings) -> None:
    """Check settings given on the command line, each on its own, before any session;
    an error names the option (:func:`option_name`). What depends on a session (a hop
    against the manifest's n_fft, the session's length) is checked per session by
    :func:`studio_sep.stages.settings.resolve_settings`.

    Raises
    ------
    InputError
        Naming the option, the value and the fix.
    """
    if isinstance(options.n_iter, str) and options.n_iter != "auto":
        raise InputError(None, option_name("n_iter"), f"{options.n_iter!r} is not a number of iterations or auto",
                         "write e.g. --iterations 100, or --iterations auto")
    for field, minimum in (("n_iter", 0), ("n_basis", 1), ("seed", 0), ("hop", 1), ("ensemble", 1),
                           ("processing_sample_rate", MIN_PROCESSING_RATE)):
        value = getattr(options, field)
        if value is not None and value != "auto" and value < minimum:
            raise InputError(None, option_name(field), f"must be at least {minimum}, got {value}",
                             "the separation needs at least 8 kHz" if field == "processing_sample_rate" else None)
    if options.n_fft is not None:
        try:
            check_fft_settings(options.n_fft, options.hop or options.n_fft // 4)
        except InputError as exc:
            raise InputError(None, option_name(exc.field), exc.problem, exc.fix) from None
    for field, choices in (("device", DEVICES), ("dtype", DTYPES), ("prior", PRIORS)):
        value = getattr(options, field)
        if value is not None and value not in choices:
            raise InputError(None, option_name(field), f"{value!r} is not one of {', '.join(choices)}",
                             "pick one of those")
    if options.init is not None:
        check_init_names(options.init, option_name("init"))
    if options.device is not None:
        try:
            resolve_device(options.device)
        except InputError as exc:
            raise InputError(None, option_name("device"), exc.problem, exc.fix) from None


def check_session_length(session: Session, *, n_fft: int, hop: int, processing_sample_rate: int, n_basis: int,
                         init: tuple[str, ...], where: tuple) -> None:
    """The session (and, for the dictionary init, every reference take) gives the fit enough
    STFT frames: a window no longer than the recording, at least as many frames as mics
    and as bases. ``where`` is the (file, field) ``n_fft`` came from: an option, or the
    manifest's ``separation.n_fft``."""
    file, field = where
    rate = processing_sample_rate

    def check(n_samples: int, sample_rate: int, what: str, need: int) -> None:
        samples = math.ceil(n_samples * rate / sample_rate)
        frames = n_frames(samples, n_fft=n_fft, hop=hop)
        if samples < n_fft or frames < need:
            suggest = 2 ** int(math.log2(max(16, samples // 8)))
            raise InputError(file, field, f"n_fft {n_fft} with hop {hop} cuts {what} ({samples} samples at {rate} Hz) "
                             f"into {frames} STFT frames; the fit needs a window no longer than the recording and "
                             f"at least {need} frames",
                             f"use a smaller n_fft, e.g. {suggest} with hop {suggest // 4}")

    check(session.n_samples, session.sample_rate, "the session", max(len(session.mics), n_basis))
    if "dictionary" in init:
        for s in session.sources:
            if s.reference is not None:
                info = audio_info(s.reference)
                check(info.n_samples, info.sample_rate, f"the reference take of {s.name}", n_basis)
