"""The session manifest's model: the typed, frozen records of one recording (mics,
sources, room, separation settings, ground truth) and the names the manifest accepts.

A session manifest is a TOML file (``session.toml``) describing one recording: its
microphones (position, pattern, aim, where the signal lives), its sources (position,
text prompt, optional solo reference take, spot mic, MIDI score), optionally the room,
separation settings and ground truth. The format is documented in
``docs/manifest.md``; :mod:`studio_sep.session.parse` reads it, :mod:`studio_sep.session.dump`
writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PATTERNS = ("omni", "cardioid", "subcardioid", "hypercardioid", "figure8")
INITS = ("circular", "geometry", "spot", "delays", "dictionary", "prior")
#: The inits that set a guided spatial model, in the order their starts run.
SPATIAL_INITS = ("geometry", "spot", "delays")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")
PRIORS = ("none", "nmf", "classnet")  #: spectral priors (studio_sep.priors)
MIN_PROCESSING_RATE = 8000  #: Hz; the lowest rate a separation runs at (manifest and --processing-rate)


@dataclass(frozen=True)
class Mic:
    """One microphone: where it is, how it picks up, where its signal is stored."""

    name: str
    position_m: tuple[float, float, float]
    file: Path
    channel: int = 1  #: 1-based channel of ``file``
    pattern: str = "omni"
    aim_azimuth_deg: float = 0.0
    aim_elevation_deg: float = 0.0
    aim_at: str | None = None  #: source name the mic points at (sets the aim angles)


@dataclass(frozen=True)
class Source:
    """One instrument (sound source) of the session."""

    name: str
    position_m: tuple[float, float, float]
    prompt: str
    spot_mic: str | None = None
    reference: Path | None = None  #: solo take of this instrument (mono audio)
    midi: Path | None = None  #: score of this source's part


@dataclass(frozen=True)
class Room:
    """The room, when known. Positions are in the manifest's frame; ``origin_m`` is
    where that frame's origin lies in room coordinates (corner at 0, 0, 0)."""

    dimensions_m: tuple[float, float, float] | None = None
    origin_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rt60_s: float | None = None


@dataclass(frozen=True)
class SeparationSettings:
    """Separation settings, every one optional (``None``: decided later).

    One type for the manifest's ``[separation]`` table and the command line's options:
    :meth:`over` merges them field by field (command line over manifest), and
    :func:`studio_sep.stages.settings.resolve_settings` fills the defaults. The manifest
    sets only the fields in :data:`MANIFEST_SEPARATION_KEYS`; the rest come from the
    command line.
    """

    n_fft: int | None = None
    hop: int | None = None
    #: FastMNMF2 iterations of each fit: a number (exactly that many) or "auto" (until the
    #: likelihood stops improving, at most a maximum).
    n_iter: int | str | None = None
    n_basis: int | None = None
    init: tuple[str, ...] | None = None
    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    #: Spectral prior (:data:`PRIORS`); None: "classnet" when the init has "prior", else "none".
    prior: str | None = None
    #: Processing rate (None: the session's ``processing_sample_rate``, else the recording's).
    processing_sample_rate: int | None = None
    stem_mics: Mapping[str, str] | None = None  #: source → mic ("*" for all)
    subtype: str | None = None  #: of the written images (None: float32)
    #: Memory budget in bytes (None: :func:`studio_sep.stages.memory.default_budget_bytes`). A
    #: session whose estimated peak exceeds it is separated in overlapping time blocks.
    max_memory: int | None = None
    #: CLASS-net checkpoint for ``prior="classnet"`` (None: the shipped model).
    prior_model: str | None = None
    #: LAION-CLAP files for a CLAP-conditioned checkpoint: ``{"checkpoint": …, "roberta": …}``.
    clap: Mapping[str, str] | None = None
    #: Also fit from the blind start and keep the fit with the higher log-likelihood
    #: (None: off; see :func:`studio_sep.stages.settings.resolve_settings`).
    blind_start: bool | None = None
    #: Correct the geometric start's inter-mic delays by those measured on the recording
    #: (GCC-PHAT against each source's stem mic). None: off.
    measured_delays: bool | None = None
    #: Fit the model to the mics dereverberated by WPE (``nara-wpe``); the images are still
    #: the fitted Wiener filters applied to the recorded mics. None: off.
    wpe: bool | None = None
    #: Fits combined into the images, each from its own random spectral start (None: the
    #: default, :data:`studio_sep.stages.settings.DEFAULT_ENSEMBLE`).
    ensemble: int | None = None

    def over(self, other: SeparationSettings) -> SeparationSettings:
        """These settings where set, else ``other``'s, field by field."""
        return SeparationSettings(**{name: getattr(other, name) if getattr(self, name) is None
                                     else getattr(self, name) for name in self.__dataclass_fields__})


#: The fields of :class:`SeparationSettings` a manifest's ``[separation]`` table may set.
MANIFEST_SEPARATION_KEYS = ("n_fft", "hop", "n_iter", "n_basis", "init", "device", "dtype", "seed", "prior",
                            "blind_start", "ensemble")


@dataclass(frozen=True)
class Truth:
    """Ground truth: per source, its image at every mic (one channel per mic, in the
    order of ``[[mics]]``) and its dry (anechoic) signal."""

    images: Mapping[str, Path] = field(default_factory=dict)
    dry: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Session:
    """A validated session manifest.

    ``sample_rate`` and ``n_samples`` come from the mic audio; they are ``None`` when
    the session was loaded with ``check_audio=False``.
    """

    path: Path
    name: str
    mics: tuple[Mic, ...]
    sources: tuple[Source, ...]
    description: str = ""
    processing_sample_rate: int | None = None
    room: Room | None = None
    separation: SeparationSettings = SeparationSettings()
    truth: Truth | None = None
    sample_rate: int | None = None
    n_samples: int | None = None
    #: What the audio check found worth telling but not refusing (a digitally silent mic).
    warnings: tuple[str, ...] = ()

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def duration_s(self) -> float | None:
        if self.sample_rate is None or self.n_samples is None:
            return None
        return self.n_samples / self.sample_rate

    @property
    def has_truth_images(self) -> bool:
        """A ground-truth image file for every source (what evaluation needs)."""
        return self.truth is not None and set(self.truth.images) == {s.name for s in self.sources}

    def mic(self, name: str) -> Mic:
        return next(m for m in self.mics if m.name == name)

    def source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)
