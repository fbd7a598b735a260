"""Commands that separate, evaluate and run whole sessions: separate, run, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from studio_sep.cli.options import (
    DEFAULT_PRESET,
    BlindStartOpt,
    ClapCheckpointOpt,
    DeviceOpt,
    DtypeOpt,
    EnsembleOpt,
    FormatOpt,
    HopOpt,
    InitOpt,
    IterationsOpt,
    JsonOpt,
    MaxMemoryOpt,
    NBasisOpt,
    NFftOpt,
    PriorModelOpt,
    PriorOpt,
    QuietOpt,
    RateOpt,
    RobertaDirOpt,
    SeedOpt,
    StemMicOpt,
    find_preset,
    separation_options,
)
from studio_sep.cli.printing import (
    Output,
    batch_display,
    err_console,
    existing_run,
    print_metrics,
    print_separation,
    print_session_warnings,
    print_warning,
    report_batch,
    user_errors,
)
from studio_sep.util.errors import InputError


def separate(
    manifest: Annotated[Path, typer.Argument(help="The session.toml (or its folder).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root; results go to OUT/<session>/.")],
    init: InitOpt = None, iterations: IterationsOpt = None, n_basis: NBasisOpt = None, n_fft: NFftOpt = None,
    hop: HopOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None, seed: SeedOpt = None,
    processing_rate: RateOpt = None, stem_mic: StemMicOpt = None, format: FormatOpt = "float32",
    max_memory: MaxMemoryOpt = None, prior: PriorOpt = None, prior_model: PriorModelOpt = None,
    clap_checkpoint: ClapCheckpointOpt = None, roberta_dir: RobertaDirOpt = None,
    blind_start: BlindStartOpt = None, ensemble: EnsembleOpt = None, quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Separate every source at every mic (FastMNMF2); write images, stems and run.json."""
    from studio_sep.session import load_session
    from studio_sep.stages import resolve_settings, separate_session, session_lock

    output = Output(quiet, json_)
    with user_errors(out):
        options = separation_options(init, iterations, n_basis, n_fft, hop, device, dtype, seed, processing_rate,
                                      stem_mic, format, max_memory, prior, prior_model, clap_checkpoint,
                                      roberta_dir, blind_start, ensemble)
        session = load_session(manifest)
        print_session_warnings(session)
        resolve_settings(session, options)  # bad settings stop before the lock makes the session's folder
        with session_lock(out / session.name), output.progress() as progress:
            result = separate_session(session, out, options, callback=progress)
    output.result(result, paths=[result.folder], show=lambda: print_separation(result))


def run(
    sessions: Annotated[list[str], typer.Argument(help="session.toml files, folders of sessions, or quoted globs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root; each session goes to OUT/<session>/.")],
    preset: Annotated[list[Path] | None, typer.Option(help="Mixing preset (path or name in presets/); repeatable "
                                                      "(default: paper).")] = None,
    no_mix: Annotated[bool, typer.Option("--no-mix", help="Separate (and evaluate) only.")] = False,
    no_evaluate: Annotated[bool, typer.Option("--no-evaluate", help="Do not score against ground truth.")] = False,
    force: Annotated[bool, typer.Option(help="Redo every stage, even those up to date.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Sessions run at once, in a local process pool.")] = 1,
    quiet: QuietOpt = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON document on stdout and "
                                        "nothing else there; progress as JSON lines on stderr.")] = False,
    init: InitOpt = None, iterations: IterationsOpt = None, n_basis: NBasisOpt = None, n_fft: NFftOpt = None,
    hop: HopOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None, seed: SeedOpt = None,
    processing_rate: RateOpt = None, stem_mic: StemMicOpt = None, format: FormatOpt = "float32",
    max_memory: MaxMemoryOpt = None, prior: PriorOpt = None, prior_model: PriorModelOpt = None,
    clap_checkpoint: ClapCheckpointOpt = None, roberta_dir: RobertaDirOpt = None,
    blind_start: BlindStartOpt = None, ensemble: EnsembleOpt = None,
    reference_mic: Annotated[str | None, typer.Option(help="Mic to score at besides each stem mic (default: first).")] = None,
    cluster: Annotated[str | None, typer.Option(
        metavar="local|local:N|tcp://HOST:PORT", help="Run the sessions on a Dask cluster: a local one of N "
        "workers, or a running dask scheduler whose workers see the sessions and OUT at the same paths "
        "(docs/cluster.md; needs the cluster extra of studio-sep).")] = None,
    blas_threads: Annotated[int | None, typer.Option(help="BLAS threads of each session (default: its share of "
                                                     "the cores; all of them with --jobs 1).")] = None,
) -> None:
    """Every stage of every session: validate → prior → separate → images → mix → DAW → evaluate → report.

    Stages already done with the same inputs and settings are skipped (see run.json);
    an interrupted run continues where it stopped. Exit code 1 if any session failed.
    """
    output = Output(quiet, json_)
    outcomes = run_batch(sessions, out, presets=[] if no_mix else (preset or [DEFAULT_PRESET]),
                          evaluate=not no_evaluate, force=force, jobs=jobs, output=output,
                          options_args=(init, iterations, n_basis, n_fft, hop, device, dtype, seed, processing_rate,
                                        stem_mic, format, max_memory, prior, prior_model, clap_checkpoint,
                                        roberta_dir, blind_start, ensemble), reference_mic=reference_mic,
                          cluster=cluster, blas_threads=blas_threads)
    report_batch(output, outcomes)
    if any(o.status not in ("done", "up to date") for o in outcomes):
        raise typer.Exit(1)


def run_batch(sessions, out: Path, *, presets, evaluate: bool, force: bool, jobs: int, output: Output,
               options_args: tuple, reference_mic: str | None = None, cluster: str | None = None,
               blas_threads: int | None = None):
    """Check the batch (sessions found, options, presets and their plugins) before any
    work; run it with ``output``'s display (on stderr); return the outcomes (the caller
    reports them: :func:`~studio_sep.cli.printing.report_batch`)."""
    import os

    from studio_sep.batch.runner import (
        RunOptions,
        SessionJob,
        check_presets,
        check_unique_names,
        find_sessions,
        run_batch,
    )
    from studio_sep.mixing.presets import check_unique_preset_names

    with user_errors():
        if jobs < 1:
            raise InputError(None, "--jobs", f"{jobs} is not a number of processes", "use 1 or more")
        from studio_sep.batch.cluster import check_cluster_options

        cluster = check_cluster_options(cluster, jobs=jobs, blas_threads=blas_threads)
        options = separation_options(*options_args)
        if jobs > 1 and options.max_memory is None:  # the machine's budget, shared by the jobs
            from dataclasses import replace

            from studio_sep.stages import default_budget_bytes

            options = replace(options, max_memory=default_budget_bytes() // jobs)
        manifests = find_sessions(sessions)
        check_unique_names(manifests)
        preset_paths = tuple(find_preset(p).resolve() for p in presets)
        check_presets(preset_paths)
        check_unique_preset_names(preset_paths)
    cores = os.cpu_count() or 1
    run_options = RunOptions(separation=options, presets=preset_paths, force=force, evaluate=evaluate,
                             reference_mic=reference_mic,
                             blas_threads=blas_threads or (max(1, cores // jobs) if jobs > 1 else None))
    job_list = [SessionJob(index=i, manifest=m, out_root=out.resolve(), options=run_options)
                for i, m in enumerate(manifests)]
    batch = None
    if cluster is not None:  # reached and checked (resources, shared storage) before any work
        from studio_sep.batch.cluster import open_cluster

        with user_errors(out):
            batch = open_cluster(cluster, job_list, blas_threads=blas_threads)
        for note in batch.notes:
            print_warning(note)
    interrupted = False
    with batch_display(output, len(job_list)) as display:
        try:
            outcomes = batch.run(emit=display) if batch else run_batch(job_list, n_jobs=jobs, emit=display)
        except KeyboardInterrupt as exc:
            outcomes, interrupted = getattr(exc, "outcomes", []), True
        finally:
            if batch:
                batch.close()
    if interrupted:
        report_batch(output, outcomes)
        err_console.print("interrupted: finished stages are kept; run the same command again to continue")
        raise typer.Exit(130)
    return outcomes


def evaluate(
    manifest: Annotated[Path, typer.Argument(help="The session.toml (or its folder), with [truth.images].")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root given to separate.")],
    reference_mic: Annotated[str | None, typer.Option(help="Mic to score at besides each stem mic (default: first mic).")] = None,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Score a separation against the ground truth (SDR, SIR, SAR, SI-SDR; fast-bss-eval)."""
    from studio_sep.stages import evaluate_run

    output = Output(quiet, json_)
    with existing_run(manifest, out, output) as (session, progress):
        metrics = evaluate_run(session, out, reference_mic=reference_mic, callback=progress)
    report = Path(out) / session.name / "report"
    output.result(metrics, paths=[report / "metrics.json", report / "metrics.md"],
                  show=lambda: print_metrics(metrics, report))
