"""The settings of a separation run: the command line's and the manifest's
(:class:`SeparationOptions`, one type for both) merged over the defaults and checked
into one concrete, frozen :class:`ResolvedSettings`; the choice of every source's stem mic."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from studio_sep.dsp.backend import resolve_device
from studio_sep.dsp.stft import check_fft_settings, default_fft_size
from studio_sep.session import SPATIAL_INITS, SeparationSettings, Session
from studio_sep.stages.options_check import check_init_names, check_session_length, option_name
from studio_sep.util.errors import InputError

#: Settings given on the command line; ``None`` defers to the manifest, then defaults. The
#: same type as the manifest's ``[separation]`` table (:class:`studio_sep.session.SeparationSettings`).
SeparationOptions = SeparationSettings


#: Measured best on the rendered trio (benchmarks/README.md): the geometric demixer with
#: the spectral model started from its output beats adding a solo-take dictionary.
DEFAULT_INIT = ("geometry",)
#: The fit's storage (its kernels accumulate in float64, Q's row projections solve in complex128,
#: either way). float32 holds the result on the scene zoo (benchmarks/README.md, "float32 by
#: default") and fits 1.4–1.7× faster on one thread. The one float32 fit that diverged there
#: (qᴴVq rounded to ≤ 0 in complex64) separates since the projections solve in complex128, and a
#: float32 fit that still diverges is fitted again in float64 (:func:`studio_sep.stages.fit.run_fit`).
DEFAULT_DTYPE = "float32"
#: The default where every source has a spot mic of its own: both spatial starts, the
#: geometric demixer (typed positions and patterns) and the one made from the transfer
#: functions measured against the spot mics (which typed positions and patterns cannot
#: mislead), each fitted as the ensemble; the start whose fits end with the higher mean
#: log-likelihood is kept (benchmarks/README.md, "The spot start").
SPOT_INIT = ("geometry", "spot")
#: The default with two mics (a stereo pair) and no spot mic for every source: the geometric
#: start with the inter-mic delays the recording shows (its GCC-PHAT peaks, given to the
#: sources in the order of their typed delays) instead of the typed ones (benchmarks/README.md,
#: "The pair start").
PAIR_INIT = ("delays",)

#: Fits combined by default, and the iterations of each (benchmarks/README.md, "Scene zoo").
DEFAULT_ENSEMBLE = 3
#: ``--iterations auto`` (the default): every fit (alone, or each of an ensemble) stops once
#: the log-likelihood gained over the last 10 iterations is below ``STOP_TOLERANCE`` of its
#: gain since iteration 5 (:func:`studio_sep.separation.fastmnmf2.converged`), after at most
#: ``DEFAULT_ITERATIONS``. On 17 zoo scenes (``benchmarks/zoo_stopping.py``) three such fits
#: matched three fits of 100 iterations (median difference −0.01 dB) in 215 iterations instead
#: of 300 (median), and beat the three fits of 50 that were the default before by +0.15 dB
#: median, never losing more than 0.15 dB to them (benchmarks/README.md, "Stopping rule").
DEFAULT_ITERATIONS = 100
STOP_TOLERANCE = 0.03

#: The start with no guidance: circular spatial model, random bases and activations.
BLIND_INIT = ("circular",)


@dataclass(frozen=True)
class ResolvedSettings:
    """Every setting of a separation run, concrete."""

    init: tuple[str, ...]
    n_iter: int  #: iterations of each fit; with ``stop_tolerance``, the most
    n_basis: int
    n_fft: int
    hop: int
    device: str
    dtype: str
    seed: int
    sample_rate: int
    processing_sample_rate: int
    stem_mics: dict[str, str]
    subtype: str
    prior: dict = field(default_factory=lambda: {"kind": "none"})  #: PriorSpec.describe()
    normalize_every: int = 10
    log_likelihood_every: int = 5
    dictionary_iterations: int = 200
    #: The fits run: "init" (from ``init``) and, with ``blind_start`` unless the init is
    #: already blind, "blind" (from :data:`BLIND_INIT`); the one with the higher final
    #: log-likelihood is kept (:func:`studio_sep.stages.fit.fit_starts`). Off by default:
    #: on the scene zoo the higher log-likelihood was the worse separation more often than
    #: not (benchmarks/README.md, "Scene zoo").
    starts: tuple[str, ...] = ("init",)
    #: The geometric start uses the inter-mic delays measured on the recording.
    measured_delays: bool = False
    #: The model is fitted to the mics dereverberated by WPE (:func:`studio_sep.stages.signals.fit_spectrogram`).
    wpe: bool = False
    #: Fits combined into the images (:func:`studio_sep.separation.wiener.ensemble_images`),
    #: each from the same init with its own random spectral start (member k from the
    #: random stream ``(seed, 1, k)``; member 0 is the single fit's start).
    ensemble: int = 1
    #: The stopping rule of ``--iterations auto`` (:func:`studio_sep.separation.fastmnmf2.converged`);
    #: 0: exactly ``n_iter`` iterations.
    stop_tolerance: float = 0.0

    @property
    def spatial_starts(self) -> tuple[str, ...]:
        """The guided spatial starts fitted (geometry, spot or both: the better kept); one
        entry with any other init."""
        kinds = tuple(kind for kind in SPATIAL_INITS if kind in self.init)
        return kinds if len(kinds) > 1 else (None,)

    def start_init(self, start: str | None) -> tuple[str, ...]:
        """The inits of one spatial start: ``init`` without the other spatial kinds."""
        if start is None:
            return self.init
        return tuple(i for i in self.init if i == start or i not in SPATIAL_INITS)

    @property
    def iterations(self) -> int | str:
        """The iterations as asked: a number, or "auto"."""
        return "auto" if self.stop_tolerance else self.n_iter


def resolve_settings(session: Session, options: SeparationOptions = SeparationOptions()) -> ResolvedSettings:
    """Merge command line, manifest and defaults (field by field, in that order); check the
    result before any work."""
    chosen = options.over(session.separation)
    pick = lambda name, default: default if getattr(chosen, name) is None else getattr(chosen, name)  # noqa: E731
    native = session.sample_rate
    if native is None:
        raise ValueError("resolve_settings needs a session loaded with its audio checked")
    proc_sr = chosen.processing_sample_rate or session.processing_sample_rate or native
    if proc_sr > native:
        raise InputError(*_where(session, options, "processing_sample_rate"),
                         f"{proc_sr} Hz is above the recording's {native} Hz", f"use at most {native}")
    default_fft, default_hop = default_fft_size(proc_sr)
    n_fft = pick("n_fft", default_fft)
    hop = pick("hop", n_fft // 4 if n_fft != default_fft else default_hop)
    try:
        check_fft_settings(n_fft, hop)
    except InputError as exc:
        raise InputError(*_where(session, options, exc.field), exc.problem, exc.fix) from None
    init = tuple(dict.fromkeys(pick("init", _default_init(session))))
    prior_kind = pick("prior", "classnet" if "prior" in init else "none")
    if prior_kind != "none" and "prior" not in init:
        init = init + ("prior",)
    if prior_kind == "none" and "prior" in init:
        raise InputError(session.path, "separation.init", "the prior init needs a prior, and the prior is none",
                         "use --prior nmf or --prior classnet, or drop prior from init")
    _check_init(session, init)
    stem_mics = choose_stem_mics(session, chosen.stem_mics or {})
    device = resolve_device(pick("device", "auto"))
    dtype = pick("dtype", DEFAULT_DTYPE)
    if dtype not in ("float32", "float64"):
        raise InputError(None, "dtype", f"{dtype!r} is not float32 or float64", "pick one of those")
    # the blind start keeps the better of two single fits: asked for, it replaces the default ensemble
    ensemble = pick("ensemble", 1 if pick("blind_start", False) else DEFAULT_ENSEMBLE)
    n_iter = pick("n_iter", "auto")
    stop_tolerance = STOP_TOLERANCE if n_iter == "auto" else 0.0
    if n_iter == "auto":
        n_iter = DEFAULT_ITERATIONS
    n_basis, seed = pick("n_basis", 8), pick("seed", 0)
    for name, value, minimum in (("n_iter", n_iter, 0), ("n_basis", n_basis, 1), ("seed", seed, 0),
                                 ("ensemble", ensemble, 1)):
        if value < minimum:
            raise InputError(None, name, f"must be at least {minimum}, got {value}")
    check_session_length(session, n_fft=n_fft, hop=hop, processing_sample_rate=proc_sr, n_basis=n_basis, init=init,
                         where=_where(session, options, "n_fft"))
    from studio_sep.priors import resolve_prior

    prior = resolve_prior(session, prior_kind, model=chosen.prior_model,
                          clap=dict(chosen.clap) if chosen.clap else None)
    wpe = bool(pick("wpe", False))
    if wpe and importlib.util.find_spec("nara_wpe") is None:
        raise InputError(None, "separation.wpe", "WPE needs the nara-wpe package, which is not installed",
                         "pip install 'studio-sep[dereverb]', or leave wpe off")
    guided, blind_start = init != BLIND_INIT, pick("blind_start", False)
    spatial = [kind for kind in SPATIAL_INITS if kind in init]
    if blind_start and len(spatial) > 1:  # the blind start against one guided fit: the first (geometric) one
        init = tuple(i for i in init if i not in spatial[1:])
    starts = ("init", "blind") if blind_start and guided else ("init",)
    if len(starts) > 1 and ensemble > 1:
        raise InputError(*_where(session, options, "blind_start"), "the blind start (keep the better of two fits) "
                         f"and an ensemble of {ensemble} fits (combine them all) do not go together",
                         "drop --blind-start or use --ensemble 1")
    return ResolvedSettings(init=init, n_iter=n_iter, n_basis=n_basis, n_fft=n_fft, hop=hop, device=device,
                            dtype=dtype, seed=seed, sample_rate=native, processing_sample_rate=proc_sr,
                            stem_mics=stem_mics, subtype=chosen.subtype or "float32", prior=prior.describe(),
                            starts=starts, measured_delays=bool(pick("measured_delays", False))
                            and "geometry" in init and len(session.mics) > 1,
                            wpe=wpe, ensemble=ensemble, stop_tolerance=stop_tolerance)


def _where(session: Session, options: SeparationOptions, field: str) -> tuple:
    """(file, field) to blame for a setting: the command line's option when it set the
    value, else the manifest's field."""
    if getattr(options, field) is not None:
        return None, option_name(field)
    return session.path, "session.processing_sample_rate" if field == "processing_sample_rate" else \
        f"separation.{field}"


def _default_init(session: Session) -> tuple[str, ...]:
    """:data:`SPOT_INIT` when every source has a spot mic of its own, else :data:`PAIR_INIT` for
    a pair of mics, else :data:`DEFAULT_INIT`;
    the blind start when the session has fewer mics than sources (a demixer from columns then
    cannot name every source, and the blind start is the one that works)."""
    if len(session.sources) > len(session.mics):
        return BLIND_INIT
    if has_own_spot_mics(session):
        return SPOT_INIT
    return PAIR_INIT if len(session.mics) == 2 else DEFAULT_INIT


def has_own_spot_mics(session: Session) -> bool:
    """Every source has a spot mic, and no two share one."""
    spots = [s.spot_mic for s in session.sources]
    return all(spots) and len(set(spots)) == len(spots)


def _check_init(session: Session, init: tuple[str, ...]) -> None:
    check_init_names(init)
    for kind in SPATIAL_INITS:
        if kind in init and len(session.sources) > len(session.mics):
            raise InputError(session.path, "separation.init",
                             f"{kind} init needs at least as many mics as sources ({len(session.mics)} < "
                             f"{len(session.sources)})", "use init circular, or add mics")
    if "spot" in init:
        _check_spot_mics(session)
    if "delays" in init and len(session.mics) != 2:
        raise InputError(session.path, "separation.init",
                         f"the delays init measures the delays between a pair of mics; this session has "
                         f"{len(session.mics)}", "use init geometry (or spot, with a spot mic for every source)")
    if "dictionary" in init:
        missing = [i for i, s in enumerate(session.sources) if s.reference is None]
        if missing:
            raise InputError(session.path, f"sources[{missing[0]}].reference",
                             f"dictionary init needs a solo reference take of every source; "
                             f"{session.sources[missing[0]].name!r} has none",
                             "add reference = \"path.wav\" or drop dictionary from init")


def _check_spot_mics(session: Session) -> None:
    """The spot init measures every source's transfer functions against its own spot mic."""
    seen: dict[str, int] = {}
    for i, s in enumerate(session.sources):
        if s.spot_mic is None:
            raise InputError(session.path, f"sources[{i}].spot_mic",
                             f"the spot init needs a spot mic for every source; {s.name!r} has none",
                             "add spot_mic = \"<mic name>\" to it, or use init geometry")
        if s.spot_mic in seen:
            raise InputError(session.path, f"sources[{i}].spot_mic",
                             f"{s.name!r} and {session.sources[seen[s.spot_mic]].name!r} share the spot mic "
                             f"{s.spot_mic!r}; the spot init needs one of its own for every source",
                             "give each source its own spot mic, or use init geometry")
        seen[s.spot_mic] = i


def choose_stem_mics(session: Session, chosen: Mapping[str, str]) -> dict[str, str]:
    """Every source's stem mic: the one chosen for it (or for "*"), else its spot mic, else the nearest."""
    mic_names = [m.name for m in session.mics]
    source_names = [s.name for s in session.sources]
    for source, mic in chosen.items():
        if source != "*" and source not in source_names:
            raise InputError(None, "stem-mic", f"{source!r} is not a source of {session.name}",
                             f"sources: {', '.join(source_names)}")
        if mic not in mic_names:
            raise InputError(None, "stem-mic", f"{mic!r} is not a mic of {session.name}",
                             f"mics: {', '.join(mic_names)}")
    result = {}
    for s in session.sources:
        mic = chosen.get(s.name) or chosen.get("*") or s.spot_mic
        if mic is None:
            mic = min(session.mics, key=lambda m: math.dist(m.position_m, s.position_m)).name
        result[s.name] = mic
    return result
