"""CLASS-net commands: augment (training data), train, average (weight averaging)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from studio_sep.cli.options import ClapCheckpointOpt, JsonOpt, QuietOpt, RobertaDirOpt
from studio_sep.cli.printing import Output, cell, console, user_errors


def augment(
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write (created; an existing one is resumed).")],
    examples: Annotated[int | None, typer.Option(help="Training examples (10 s each; default 1000, "
                                                 "0 with --heldout).")] = None,
    val: Annotated[int | None, typer.Option(help="Validation examples (default 300, 0 with --heldout).")] = None,
    test: Annotated[int, typer.Option(help="Held-out test examples.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the stem pool and of every example.")] = 0,
    sessions: Annotated[list[Path] | None, typer.Option("--session", metavar="SESSION.toml", help="A session.toml whose solo reference "
                                                        "takes join the pool (as <class>_rec); repeatable.")] = None,
    slakh: Annotated[Path | None, typer.Option(help="A Slakh2100 split folder (TrackXXXXX/metadata.yaml, "
                                               "stems/); keyword-filtered.")] = None,
    soundfont: Annotated[list[Path] | None, typer.Option(help="General MIDI SoundFont for the rendered phrases; "
                                                         "repeatable (default: FluidR3_GM and TimGM6mb, the "
                                                         "training timbres).")] = None,
    heldout: Annotated[bool, typer.Option("--heldout", help="The unseen-timbre test set: render with MuseScore "
                                          "General (held out of training) and write test examples only.")] = False,
    phrases_per_program: Annotated[int, typer.Option(help="Random phrases rendered per GM program.")] = 8,
    classes: Annotated[str | None, typer.Option(metavar="CLASS[,CLASS...]", help="Comma-separated instrument classes "
                                                "to render (default: all of studio_sep/data/instruments.py; "
                                                "interferers come from these too).")] = None,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Render CLASS-net training data by the paper's augmentation (§3.3.2): mixture, target,
    10 s reference and a JSON prompt per example."""
    from studio_sep.data import build_stem_pool, generate_dataset
    from studio_sep.data.soundfonts import augment_soundfonts

    output = Output(quiet, json_)
    with user_errors():
        soundfonts, examples, val = augment_soundfonts(soundfont, heldout=heldout, n_train=examples, n_val=val)
        with output.progress() as progress:
            chosen = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
            pool = build_stem_pool(soundfont=soundfonts, phrases_per_program=phrases_per_program, classes=chosen,
                                   sessions=tuple(sessions or ()), slakh=slakh, seed=seed, progress=progress)
            meta = generate_dataset(out_dir, pool, n_train=examples, n_val=val, n_test=test, seed=seed,
                                    progress=progress)
    output.result({"folder": str(out_dir), **meta}, paths=[out_dir], show=lambda: console.print(
        f"dataset {out_dir}: " + ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
        + f" examples of {meta['duration_s']:g} s at {meta['sample_rate']} Hz"))


def train(
    data: Annotated[Path, typer.Argument(help="Dataset folder written by `studio-sep augment`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Training folder: checkpoints, history.json; "
                                      "an existing one is resumed.")],
    steps: Annotated[int, typer.Option(help="Total optimiser steps (a resumed run goes on to this many).")] = 1000,
    model: Annotated[Path | None, typer.Option(help="Checkpoint to start from (a ClassNet: LASS-net or authors' "
                                               "layout converted, or a QueriedClassNet).")] = None,
    width: Annotated[float, typer.Option(help="Channel multiplier of a new network (1.0: LASS-net's 52 M "
                                         "parameters).")] = 0.125,
    depth: Annotated[int, typer.Option(help="Encoder/decoder levels of a new network.")] = 6,
    mode: Annotated[str, typer.Option(metavar="full|decoder", help="full, or decoder (decoder-only fine-tuning, paper §3.4).")] = "full",
    query: Annotated[str, typer.Option(metavar="learned|clap", help="learned (in-project embeddings, no downloads) or clap.")] = "learned",
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 4,
    crop: Annotated[float, typer.Option(help="Training crop of each example, seconds.")] = 3.0,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    sdr_weight: Annotated[float, typer.Option(help="Weight per dB of the waveform SDR term added to eq. 18's "
                                              "magnitude MAE (0: eq. 18 alone, as the shipped model).")] = 0.02,
    mask_bce_weight: Annotated[float, typer.Option(help="Weight of the cross-entropy of the mask's logits against "
                                                   "the ideal ratio mask: a gradient that a saturated (collapsed) "
                                                   "mask keeps (0: none).")] = 0.3,
    mask_bce_bins: Annotated[str, typer.Option(metavar="magnitude|uniform", help="The cross-entropy's weight per "
                                               "time-frequency bin: the mixture's magnitude, or uniform.")] = "magnitude",
    balance: Annotated[str, typer.Option(metavar="class|none", help="class: every class drawn equally often; "
                                         "none: as the data holds them.")] = "class",
    timbre_eq: Annotated[float, typer.Option("--timbre-eq", help="Give each training crop's target a random "
                                             "smooth EQ of up to ± this many dB, the mixture made again with it "
                                             "(timbres the SoundFonts do not have; 0: none).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and of every batch.")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (1 is often fastest on a busy small machine).")] = 1,
    validate_every: Annotated[int | None, typer.Option(help="Steps between validations (default: one epoch).")] = None,
    chunk_steps: Annotated[int | None, typer.Option(help="Stop after this many steps in this call (the run "
                                                    "resumes with the same command; weights do not depend on "
                                                    "the chunking).")] = None,
    clap_checkpoint: ClapCheckpointOpt = None, roberta_dir: RobertaDirOpt = None,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Train CLASS-net (full or decoder-only), resumable; validation SDR / SI-SDR each epoch."""
    from studio_sep.classnet.train import train as train_classnet

    output = Output(quiet, json_)
    with user_errors():
        encoder = None
        if query == "clap":
            from studio_sep.classnet.clap import ClapQuery

            encoder = ClapQuery(checkpoint=clap_checkpoint, roberta=roberta_dir)
        with output.progress() as progress:
            result = train_classnet(data, out, model=model, width=width, depth=depth, query=query,
                                    query_encoder=encoder, mode=mode, steps=steps, batch_size=batch_size,
                                    crop_s=crop, lr=lr, sdr_weight=sdr_weight, mask_bce_weight=mask_bce_weight,
                                    mask_bce_bins=mask_bce_bins, balance=balance, timbre_db=timbre_eq, seed=seed,
                                    threads=threads, validate_every=validate_every, chunk_steps=chunk_steps,
                                    callback=progress, log=output.log)
    output.result(result, paths=[result.best_path], show=lambda: console.print(
        f"trained {result.steps} steps (resumed from {result.resumed_from}); best: step {cell(result.best_step)}, "
        f"worst-class SDR improvement {cell(result.best_worst_sdri, '+.2f')} dB, mean SI-SDR "
        f"{cell(result.best_si_sdr, '.2f')} dB: {result.best_path}"))


def average(
    out: Annotated[Path, typer.Argument(help="Checkpoint to write (*.safetensors or *.pt).")],
    checkpoints: Annotated[list[Path], typer.Argument(help="Two or more checkpoints of one training run "
                                                      "(same model and configuration).")],
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Average the weights of checkpoints of one training run into one checkpoint
    (stochastic weight averaging)."""
    from studio_sep.classnet import average_checkpoints

    output = Output(quiet, json_)
    with user_errors():
        sha = average_checkpoints(checkpoints, out)
    output.result({"checkpoint": str(out), "sha256": sha, "averaged": [str(p) for p in checkpoints]},
                  paths=[out], show=lambda: console.print(
                      f"averaged {len(checkpoints)} checkpoints into {cell(str(out))} (weights SHA-256 {sha[:12]}…)"))
