"""Spectral priors: what ``--prior`` resolves to, and each source's power spectrogram estimate (paper §3.4).

A prior turns each source's query (its manifest ``prompt``, and its solo ``reference``
take when it has one) and one mic's signal into ``V_n`` (F × T, power, at the
separation's STFT), which then starts FastMNMF2's spectral model: H by NNLS of ``V_n``
on a dictionary W (paper eq. 11), or W and H by NMF of ``V_n``
(:func:`studio_sep.stages.pipeline.initial_model`).

Kinds (``--prior``):

``none``
    No prior: the spectral model starts from the geometric demixer's output or at random.
``nmf``
    Non-neural: a KL-NMF dictionary per instrument class, learned from General-MIDI
    renders of every note of the class's programs (or from the source's solo take when
    it has one); the activations of all the sources' dictionaries together are fitted
    on the source's stem mic, and ``V_n`` is source n's share of that mic (Wiener
    mask). Deterministic, seconds. (:mod:`studio_sep.priors.nmf`)
``classnet``
    CLASS-net (:mod:`studio_sep.classnet`): the network's estimate of the queried
    source from the source's stem mic. A checkpoint bundling its own query encoder
    (``QueriedClassNet``) needs nothing else; a plain ``ClassNet`` checkpoint is
    conditioned by LAION-CLAP (:mod:`studio_sep.classnet.clap`); so is AudioSep's released
    checkpoint (:mod:`studio_sep.classnet.audiosep`, 32 kHz, text queries only).
    (:mod:`studio_sep.priors.classnet`)

Each source's prior is computed on its stem mic (its ``spot_mic``, else the nearest
mic; ``--stem-mic`` changes it), where it is loudest. A prior holding less than
:data:`PRIOR_FLOOR_DB` of its stem mic's energy is replaced by that mic's power; the record
says which prior each source used (``used_by_source``: the kind, or :data:`STEM_MIC_POWER`)
and why (``rejected``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio_sep.data.instruments import match_class
from studio_sep.priors.classnet import classnet_prior, load_classnet
from studio_sep.priors.nmf import nmf_prior
from studio_sep.session import PRIORS
from studio_sep.util.atomic import file_sha256
from studio_sep.util.errors import InputError

__all__ = ["PRIOR_FLOOR_DB", "SHIPPED_MODEL", "STEM_MIC_POWER", "PriorResult", "PriorSpec", "compute_prior", "resolve_prior"]

#: The CLASS-net the project trains and ships (studio_sep/classnet/weights/MODEL_CARD.md).
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "classnet" / "weights" / "classnet-small.safetensors"
#: A source's prior holding less than this share of its stem mic's energy (dB) is not
#: used: its stem mic's power takes its place (recorded in run.json, ``prior.rejected``).
PRIOR_FLOOR_DB = -20.0
#: What ``run.json`` → ``prior.used_by_source`` says of a source whose prior was replaced by its stem mic's power.
STEM_MIC_POWER = "stem_mic_power"


@dataclass(frozen=True)
class PriorSpec:
    """What ``--prior`` resolved to: checked before any work, fingerprinted, recorded."""

    kind: str
    model: Path | None = None
    model_sha256: str | None = None
    #: source name → instrument class (nmf) or query (classnet)
    queries: dict[str, str] = field(default_factory=dict)
    clap: dict | None = None
    #: classnet only: the checkpoint's layout, "studio-sep" (save_checkpoint) or "audiosep"
    layout: str | None = None

    def describe(self) -> dict:
        out = {"kind": self.kind, "model": str(self.model) if self.model else None,
               "model_sha256": self.model_sha256, "queries": dict(self.queries), "clap": self.clap}
        return out if self.layout is None else {**out, "layout": self.layout}

    @classmethod
    def from_dict(cls, d: dict) -> PriorSpec:
        return cls(d["kind"], Path(d["model"]) if d.get("model") else None, d.get("model_sha256"),
                   dict(d.get("queries") or {}), d.get("clap"), d.get("layout"))


@dataclass(frozen=True)
class PriorResult:
    V_NFT: np.ndarray  #: power spectrogram estimate of every source at the separation STFT
    record: dict  #: what ran (kind, model, checksum, per-source mic and query)


def resolve_prior(session, kind: str, *, model: str | Path | None = None, clap: dict | None = None) -> PriorSpec:
    """Check a prior against a session before any work: the kind, the model file and that
    every source's prompt is one the prior understands."""
    if kind not in PRIORS:
        raise InputError(None, "prior", f"unknown prior {kind!r}", f"use one of {', '.join(PRIORS)}")
    if kind == "none":
        return PriorSpec("none")
    if kind == "nmf":  # a prompt naming no class (a voice, say) falls back to its stem mic's power
        queries = {s.name: match_class(s.prompt) for s in session.sources}
        return PriorSpec("nmf", queries=queries)
    path = Path(model) if model is not None else SHIPPED_MODEL
    if not path.is_file():
        if model is None:
            raise InputError(path, None, "this installation has no shipped CLASS-net model",
                             "pass --prior-model PATH (a checkpoint from `studio-sep train`) or use --prior nmf")
        raise InputError(path, "prior-model", "CLASS-net checkpoint not found",
                         "pass the path of a checkpoint written by `studio-sep train`")
    loaded = load_classnet(str(path.resolve()), file_sha256(path))
    from studio_sep.classnet.query import model_knows  # torch: imported once a prior runs
    # a model of a few classes (the shipped one: violin, saxophone, piano) is not asked about a
    # prompt it does not know (a voice, a cello): that source is queried by its solo take alone
    # when it has one, else its stem mic's power stands in, as with the nmf prior
    queries = {s.name: s.prompt if loaded.known_classes is None or model_knows(s.prompt, loaded.known_classes)
               else None for s in session.sources}
    clap_record = None
    if loaded.needs_clap:  # a plain ClassNet: conditioned by LAION-CLAP, whose files must be there
        from studio_sep.classnet.clap import resolve_clap_files

        files = resolve_clap_files((clap or {}).get("checkpoint"), (clap or {}).get("roberta"))
        clap_record = {"checkpoint": str(files.checkpoint), "roberta": str(files.roberta_dir),
                       "checkpoint_sha256": file_sha256(files.checkpoint)}
        if loaded.layout == "audiosep":  # the CLAP file must be the one AudioSep was trained with
            from studio_sep.classnet.audiosep_checkpoint import check_clap_file

            checked = check_clap_file(loaded.clap_fingerprint, files.checkpoint, checkpoint=path)
            clap_record["query"] = "text"  # AudioSep was trained on text queries only
            # CLAP tensors found equal in the checkpoint's frozen query encoder (0: it has none)
            clap_record["tensors_matching_checkpoint"] = checked
    return PriorSpec("classnet", model=path.resolve(), model_sha256=loaded.sha256, queries=queries,
                     clap=clap_record, layout=loaded.layout)


def compute_prior(spec: PriorSpec, session, settings, x_proc_MS: np.ndarray, X_FTM: np.ndarray, *,
                  callback: Callable[[int, int], None] | None = None) -> PriorResult:
    """``V_n`` for every source from the mics at the processing rate (``(M, S)``) and
    their STFT at the separation's settings (``(F, T, M)``, as the fit uses it)."""
    mic_index = {m.name: i for i, m in enumerate(session.mics)}
    mics = [mic_index[settings.stem_mics[s.name]] for s in session.sources]
    if spec.kind == "nmf":
        V = nmf_prior(session, settings, X_FTM, mics, spec, callback=callback)
    elif spec.kind == "classnet":
        V = classnet_prior(session, settings, x_proc_MS, mics, spec, callback=callback)
    else:
        raise ValueError(f"compute_prior: no spectra for prior {spec.kind!r}")
    V = list(V)
    # A prior that keeps almost nothing of its mic (a network whose mask collapsed for
    # this query) would start the source silent: its stem mic's power stands in for it.
    levels_db, rejected = {}, {}
    for n, (source, m) in enumerate(zip(session.sources, mics)):
        X_FT = X_FTM[:, :, m]
        mic_power = X_FT.real ** 2 + X_FT.imag ** 2  # not |X|²: numpy's complex abs rounds by the output's alignment
        if V[n] is None:  # no class and no solo take to learn from
            V[n] = mic_power
            rejected[source.name] = "its prompt names no instrument class the prior knows"
            continue
        level = 10 * np.log10(max(float(V[n].sum()), 1e-300) / max(float(mic_power.sum()), 1e-300))
        levels_db[source.name] = round(level, 2)
        if level < PRIOR_FLOOR_DB:
            V[n] = mic_power
            rejected[source.name] = f"the {spec.kind} prior kept {level:.1f} dB of its mic's energy, floor {PRIOR_FLOOR_DB:g} dB"
    record = {**spec.describe(), "mics": {s.name: session.mics[m].name for s, m in zip(session.sources, mics)},
              "level_db": levels_db, "rejected": rejected,
              "used_by_source": {s.name: STEM_MIC_POWER if s.name in rejected else spec.kind for s in session.sources}}
    return PriorResult(np.stack(V), record)

