"""Spectral priors: a per-source power spectrogram estimate from one mic (paper §3.4).

A prior turns each source's query (its manifest ``prompt``, and its solo ``reference``
take when it has one) and one mic's signal into ``V_n`` (F × T, power, at the
separation's STFT), which then starts FastMNMF2's spectral model: H by NNLS of ``V_n``
on a dictionary W (paper eq. 11), or W and H by NMF of ``V_n``
(:func:`studio_sep.separation.initial.initial_model`).

Kinds (``--prior``):

``none``
    No prior: the spectral model starts from the geometric demixer's output or at random.
``nmf``
    Non-neural: a KL-NMF dictionary per instrument class, learned from General-MIDI
    renders of every note of the class's programs (or from the source's solo take when
    it has one); the activations of all the sources' dictionaries together are fitted
    on the source's stem mic, and ``V_n`` is source n's share of that mic (Wiener
    mask). Deterministic, seconds.
``classnet``
    CLASS-net (:mod:`studio_sep.classnet`): the network's estimate of the queried
    source from the source's stem mic. A checkpoint bundling its own query encoder
    (``QueriedClassNet``) needs nothing else; a plain ``ClassNet`` checkpoint is
    conditioned by LAION-CLAP (:mod:`studio_sep.classnet.clap`).

Each source's prior is computed on its stem mic (its ``spot_mic``, else the nearest
mic; ``--stem-mic`` changes it), where it is loudest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio_sep.data.instruments import CLASSES, class_of_prompt
from studio_sep.dsp import stft
from studio_sep.dsp.resample import resample
from studio_sep.separation import nmf as nmf_tools
from studio_sep.session import PRIORS
from studio_sep.util.atomic import file_sha256
from studio_sep.util.errors import InputError

#: The CLASS-net the project trains and ships (studio_sep/classnet/weights/MODEL_CARD.md).
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "classnet" / "weights" / "classnet-small.safetensors"
#: A source's prior holding less than this share of its stem mic's energy (dB) is not
#: used: its stem mic's power takes its place (recorded in run.json, ``prior.rejected``).
PRIOR_FLOOR_DB = -20.0
#: Bases of each class dictionary of the ``nmf`` prior, and its KL-NMF iterations.
NMF_PRIOR_BASES = 24
NMF_PRIOR_ITERATIONS = 100
#: Rendered notes of the ``nmf`` prior's class dictionaries: every third semitone of the
#: class's range, this long, at two velocities, for every GM program of the class.
NOTE_S, NOTE_STEP, NOTE_VELOCITIES = 0.5, 3, (60, 100)


@dataclass(frozen=True)
class PriorSpec:
    """What ``--prior`` resolved to: checked before any work, fingerprinted, recorded."""

    kind: str
    model: Path | None = None
    model_sha256: str | None = None
    #: source name → instrument class (nmf) or query (classnet)
    queries: dict[str, str] = field(default_factory=dict)
    clap: dict | None = None

    def describe(self) -> dict:
        return {"kind": self.kind, "model": str(self.model) if self.model else None,
                "model_sha256": self.model_sha256, "queries": dict(self.queries), "clap": self.clap}

    @classmethod
    def from_dict(cls, d: dict) -> PriorSpec:
        return cls(d["kind"], Path(d["model"]) if d.get("model") else None, d.get("model_sha256"),
                   dict(d.get("queries") or {}), d.get("clap"))


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
    if kind == "nmf":
        queries = {s.name: class_of_prompt(s.prompt, where=f"sources[{i}].prompt", file=session.path)
                   for i, s in enumerate(session.sources)}
        return PriorSpec("nmf", queries=queries)
    path = Path(model) if model is not None else SHIPPED_MODEL
    if not path.is_file():
        if model is None:
            raise InputError(path, None, "this installation has no shipped CLASS-net model",
                             "pass --prior-model PATH (a checkpoint from `studio-sep train`) or use --prior nmf")
        raise InputError(path, "prior-model", "CLASS-net checkpoint not found",
                         "pass the path of a checkpoint written by `studio-sep train`")
    loaded = _load_classnet(str(path.resolve()), file_sha256(path))
    queries = {}
    for i, s in enumerate(session.sources):
        queries[s.name] = s.prompt
        if loaded.known_classes is not None:
            class_of_prompt(s.prompt, where=f"sources[{i}].prompt", file=session.path,
                            classes=loaded.known_classes)
    clap_record = None
    if loaded.needs_clap:  # a plain ClassNet: conditioned by LAION-CLAP, whose files must be there
        from studio_sep.classnet.clap import resolve_clap_files

        files = resolve_clap_files((clap or {}).get("checkpoint"), (clap or {}).get("roberta"))
        clap_record = {"checkpoint": str(files.checkpoint), "roberta": str(files.roberta_dir),
                       "checkpoint_sha256": file_sha256(files.checkpoint)}
    return PriorSpec("classnet", model=path.resolve(), model_sha256=loaded.sha256, queries=queries,
                     clap=clap_record)


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
    # A prior that keeps almost nothing of its mic (a network whose mask collapsed for
    # this query) would start the source silent: its stem mic's power stands in for it.
    levels_db, rejected = {}, {}
    for n, (source, m) in enumerate(zip(session.sources, mics)):
        mic_power = np.abs(X_FTM[:, :, m]) ** 2
        level = 10 * np.log10(max(float(V[n].sum()), 1e-300) / max(float(mic_power.sum()), 1e-300))
        levels_db[source.name] = round(level, 2)
        if level < PRIOR_FLOOR_DB:
            V[n] = mic_power
            rejected[source.name] = f"{level:.1f} dB below its mic (floor {PRIOR_FLOOR_DB:g} dB): stem mic power used"
    record = {**spec.describe(), "mics": {s.name: session.mics[m].name for s, m in zip(session.sources, mics)},
              "level_db": levels_db, "rejected": rejected}
    return PriorResult(V, record)


# ------------------------------------------------------------------------------ nmf prior

def nmf_prior(session, settings, X_FTM, mics: Sequence[int], spec: PriorSpec, *, callback=None) -> np.ndarray:
    """The ``nmf`` prior: supervised KL-NMF of each source's stem mic on the class dictionaries."""
    from studio_sep.io import audio as audio_io

    rng = np.random.default_rng([settings.seed, 3])
    dictionaries = []
    steps = len(session.sources) * 2
    for n, source in enumerate(session.sources):
        if source.reference is not None:
            ref, sr = audio_io.read_audio(source.reference)
            mag = np.abs(stft.stft(resample(ref, sr, settings.processing_sample_rate),
                                   n_fft=settings.n_fft, hop=settings.hop)[:, :, 0])
        else:
            notes = class_notes(spec.queries[source.name], settings.processing_sample_rate)
            mag = np.abs(stft.stft(notes[None], n_fft=settings.n_fft, hop=settings.hop)[:, :, 0])
        dictionaries.append(nmf_tools.nmf(mag, n_basis=NMF_PRIOR_BASES, n_iter=NMF_PRIOR_ITERATIONS, rng=rng)[0])
        if callback:
            callback(n + 1, steps)
    out = []
    for n, m in enumerate(mics):
        mag = np.abs(X_FTM[:, :, m])
        shares = nmf_tools.supervised_nmf(mag, dictionaries, n_iter=NMF_PRIOR_ITERATIONS)
        out.append((shares[n] * mag) ** 2)
        if callback:
            callback(len(session.sources) + n + 1, steps)
    return np.stack(out)


@functools.lru_cache(maxsize=16)
def class_notes(name: str, sample_rate: int, soundfont: str | None = None) -> np.ndarray:
    """Every :data:`NOTE_STEP`-th note of a class's range, on each of its GM programs, at
    :data:`NOTE_VELOCITIES`, rendered dry and in sequence (mono, float64)."""
    import mido

    from studio_sep.sim.simulate import find_soundfont, render_midi

    cls = CLASSES[name]
    ticks = 480
    midi = mido.MidiFile(type=1, ticks_per_beat=ticks)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(60), time=0))
    note_ticks, gap_ticks = round(NOTE_S * ticks), round(0.15 * ticks)
    pending = 0
    for program in cls.programs:
        track.append(mido.Message("program_change", channel=0, program=program, time=pending))
        pending = 0
        for key in range(cls.low_note, cls.high_note + 1, NOTE_STEP):
            for velocity in NOTE_VELOCITIES:
                chord = [key, key + 4, key + 7] if cls.polyphonic and key % 2 else [key]
                for k, note in enumerate(chord):
                    track.append(mido.Message("note_on", channel=0, note=min(note, 127), velocity=velocity,
                                              time=pending if k == 0 else 0))
                    pending = 0
                for k, note in enumerate(chord):
                    track.append(mido.Message("note_off", channel=0, note=min(note, 127), velocity=0,
                                              time=note_ticks if k == 0 else 0))
                pending = gap_ticks
    track.append(mido.MetaMessage("end_of_track", time=pending))
    return render_midi(midi, sample_rate=sample_rate, soundfont=find_soundfont(soundfont), tail_s=0.5)


# ------------------------------------------------------------------------- classnet prior

@dataclass(frozen=True)
class _LoadedClassNet:
    net: object
    query: object | None  #: the bundled query encoder, or None (CLAP)
    sha256: str
    known_classes: tuple[str, ...] | None
    needs_clap: bool


@functools.lru_cache(maxsize=2)
def _load_classnet(path: str, file_sha: str) -> _LoadedClassNet:
    """The network and its query encoder from a checkpoint (cached per file content)."""
    from studio_sep.classnet import load_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.model
    query = getattr(model, "query", None)
    net = getattr(model, "net", model)
    classes = tuple(getattr(query, "classes", ())) or None
    return _LoadedClassNet(net=net, query=query, sha256=ckpt.sha256, known_classes=classes,
                           needs_clap=query is None)


def classnet_prior(session, settings, x_proc_MS, mics: Sequence[int], spec: PriorSpec, *,
                   callback=None) -> np.ndarray:
    """The ``classnet`` prior: the network's estimate of each source from its stem mic,
    at the network's rate, back at the processing rate, as a power spectrogram."""
    import torch

    from studio_sep.classnet import separate_long
    from studio_sep.io import audio as audio_io

    loaded = _load_classnet(str(spec.model), file_sha256(spec.model))
    net = loaded.net
    query = loaded.query
    if query is None:
        from studio_sep.classnet.clap import ClapQuery

        query = ClapQuery(checkpoint=spec.clap["checkpoint"], roberta=spec.clap["roberta"])
    net_sr = net.sample_rate
    proc_sr = settings.processing_sample_rate
    prompts, references = [], []
    for source in session.sources:
        prompts.append(source.prompt)
        if source.reference is not None:
            ref, sr = audio_io.read_audio(source.reference)
            references.append(torch.from_numpy(resample(ref, sr, net_sr)[0]).float())
        else:
            references.append(None)
    out = []
    with torch.no_grad():
        cond = query.condition(prompts, references)
        for n, m in enumerate(mics):
            wave = resample(x_proc_MS[m:m + 1], proc_sr, net_sr)
            peak = max(float(np.max(np.abs(wave))), 1e-9)  # the network was trained on normalised mixtures
            est = separate_long(net, torch.from_numpy(wave / peak).float(), cond[n:n + 1].float())
            est_proc = resample(est.double().numpy() * peak, net_sr, proc_sr,
                                         n_samples=x_proc_MS.shape[1])
            out.append(np.abs(stft.stft(est_proc, n_fft=settings.n_fft, hop=settings.hop)[:, :, 0]) ** 2)
            if callback:
                callback(n + 1, len(mics))
    return np.stack(out)
