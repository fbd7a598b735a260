"""The separate stage's fit: FastMNMF2 from the initial model (or, for a later time block,
from the previous block's model), checkpointed so that an interrupted fit continues
where it stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio_sep.dsp.backend import device_spectrogram, to_host
from studio_sep.session import Session
from studio_sep.stages.checkpoints import (
    block_fit_path,
    check_finite,
    load_checkpoint,
    load_params,
    nonfinite,
    save_params,
)
from studio_sep.stages.memory import MemoryPlan
from studio_sep.stages.runrecord import fingerprint
from studio_sep.stages.settings import BLIND_INIT, ResolvedSettings
from studio_sep.stages.signals import fit_spectrogram, mic_signals
from studio_sep.util.notices import warn

#: The fit writes a checkpoint every this many iterations (resume after a kill).
CHECKPOINT_EVERY = 10


#: H updates that start a block's activations from the previous block's model.
CARRY_H_ITERATIONS = 20


def run_fit(X_host, init, settings: ResolvedSettings, work: Path, fp: str, report, *, resume: bool, carry=None,
            progress: tuple[int, int, str] | None = None):
    """Run (or continue) the fit, checkpointing to ``work/fit-checkpoint.npz``.

    ``carry`` (a fitted block's parameters, instead of ``init``) starts the fit from
    that spatial model and those bases, with activations fitted to this data
    (:func:`studio_sep.separation.fastmnmf2.fit_activations`). ``progress = (offset,
    overall, where)`` places this fit's iterations in the stage's progress (several
    blocks or starts); default: this fit alone.
    """
    from studio_sep.separation import fastmnmf2

    _, X = device_spectrogram(X_host, settings.device, settings.dtype)
    checkpoint_path = work / "fit-checkpoint.npz"
    start = load_checkpoint(checkpoint_path, fp) if resume else None
    if carry is not None and start is None:
        H = fastmnmf2.fit_activations(X, carry, n_iter=CARRY_H_ITERATIONS)
        init = fastmnmf2.Params(carry.Q_FMM, carry.G_NM, carry.W_NFK, H)
        del H

    def save_checkpoint(cp) -> None:
        save_params(checkpoint_path, cp.params, fingerprint=fp, iteration=cp.iteration,
                     log_likelihood=cp.log_likelihood, ll_iterations=cp.ll_iterations)

    offset, overall, where = progress or (0, settings.n_iter, "")
    where = f"{where}, " if where else ""

    def on_iteration(it: int, total: int, ll: float) -> None:
        report("separate", offset + it, overall, detail=f"{where}log-lik {ll:.4f}")

    first = start.iteration if start else 0
    report("separate", offset + first, overall,
           detail=f"{where}resumed at iteration {first}" if start else where.rstrip(", "))
    n_sources = (start.params if start else init).G_NM.shape[0]

    def attempt(X, resume_from):
        return fastmnmf2.fit(X, n_sources=n_sources, n_basis=settings.n_basis, n_iter=settings.n_iter, init=init,
                             normalize_every=settings.normalize_every, rng=np.random.default_rng([settings.seed, 2]),
                             callback=on_iteration, log_likelihood_every=settings.log_likelihood_every,
                             resume=resume_from, checkpoint_every=CHECKPOINT_EVERY, on_checkpoint=save_checkpoint,
                             tolerance=settings.stop_tolerance)

    fit = attempt(X, start)
    params = _host_params(fit)
    if nonfinite(params) and X.real.dtype == np.float32:
        # a float32 fit that diverged is redone from its start in float64 (its result is then
        # float64; the images and what follows take it as it is)
        label = f" ({where.rstrip(', ')})" if where else ""
        warn(f"the fit{label} diverged in float32 (NaN/inf after {fit.iterations} iterations): "
             "fitting it again from its start in float64")
        del X, fit, params  # the float32 spectrogram and the diverged state, before the float64 copy
        fit = attempt(device_spectrogram(X_host, settings.device, "float64")[1], None)
        params = _host_params(fit)
        first = 0
    if fit.iterations < settings.n_iter:  # the stopping rule ended it: this fit's share of the bar is done
        report("separate", offset + settings.n_iter, overall, detail=f"{where}converged at iteration {fit.iterations}")
    check_finite(params, f"{where}after {fit.iterations} iterations")
    return fastmnmf2.FitResult(params, fit.log_likelihood, fit.ll_iterations), first


def _host_params(fit):
    """A fit's parameters as host numpy arrays."""
    from studio_sep.separation import fastmnmf2

    return fastmnmf2.Params(*(np.array(to_host(a)) for a in (fit.params.Q_FMM, fit.params.G_NM, fit.params.W_NFK,
                                                              fit.params.H_NKT)))


def fit_blocks(session: Session, settings: ResolvedSettings, plan: MemoryPlan, work: Path, fp: str, report, *,
                force: bool) -> tuple[list[Path], list[int], int, list[int]]:
    """Fit every block in turn, each from the one before; keep each block's result.

    Returns the block files, the blocks found finished (not refitted), the number
    of iterations run here and each block's iterations.
    """
    files, done_before, iterations_run, previous, block_iterations = [], [], 0, None, []
    for b, (start, stop) in enumerate(plan.bounds()):
        path = block_fit_path(work, b)
        fp_b = fingerprint("block", fp, b)
        files.append(path)
        if not force:
            saved = load_checkpoint(path, fp_b)
            if saved is not None:
                previous = saved.params
                done_before.append(b + 1)
                block_iterations.append(int(saved.iteration))
                report("separate", (b + 1) * settings.n_iter, plan.n_blocks * settings.n_iter,
                       detail=f"block {b + 1}/{plan.n_blocks} done earlier")
                continue
        X_host = fit_spectrogram(mic_signals(session, settings, start, stop)[2], settings)
        init = load_params(work / "prior.npz")[0] if b == 0 else None
        fit, first = run_fit(X_host, init, settings, work, fp_b, report, resume=not force, carry=previous,
                             progress=(b * settings.n_iter, plan.n_blocks * settings.n_iter,
                                       f"block {b + 1}/{plan.n_blocks}" if plan.n_blocks > 1 else ""))
        iterations_run += fit.iterations - first
        block_iterations.append(fit.iterations)
        save_params(path, fit.params, fingerprint=fp_b, iteration=fit.iterations,
                     log_likelihood=fit.log_likelihood, ll_iterations=fit.ll_iterations, n_frames=X_host.shape[1])
        (work / "fit-checkpoint.npz").unlink(missing_ok=True)
        previous = fit.params
        del X_host
    return files, done_before, iterations_run, block_iterations


def start_fit_path(work: Path, start: str) -> Path:
    return work / f"fit-{start}.npz"


def fit_or_reuse(X_host, make_init, settings: ResolvedSettings, work: Path, path: Path | None, fp: str, report, *,
                 resume: bool, index: int, count: int, label: str):
    """Fit ``index`` of ``count`` run one after another (several starts, an ensemble's
    members): its finished result saved at ``path`` when there is one for ``fp``, else a
    fit from ``make_init()``, saved there (``path`` None: a lone fit, its checkpoint only).

    Returns the fit and the number of iterations run here.
    """
    n_iter = settings.n_iter
    saved = load_checkpoint(path, fp) if resume and path else None
    if saved is not None:
        report("separate", (index + 1) * n_iter, count * n_iter, detail=f"{label} done earlier")
        return fastmnmf2_result(saved), 0
    fit, first = run_fit(X_host, make_init(), settings, work, fp, report, resume=resume,
                         progress=(index * n_iter, count * n_iter, label if count > 1 else ""))
    if path:
        save_params(path, fit.params, fingerprint=fp, iteration=fit.iterations, log_likelihood=fit.log_likelihood,
                    ll_iterations=fit.ll_iterations)
    (work / "fit-checkpoint.npz").unlink(missing_ok=True)
    return fit, fit.iterations - first


def fit_starts(X_host, init, settings: ResolvedSettings, work: Path, fp: str, report, *, resume: bool):
    """Fit from every start in ``settings.starts``; keep the fit with the higher final
    log-likelihood (the model's own criterion, never the truth).

    "init" starts from ``init`` (the prior stage's initial model); "blind" from the
    circular spatial model with random bases and activations, so that a guided start
    that leads the fit astray (wrong coordinates or patterns, reverberation) can never
    make the result worse than the blind start, by the model's measure. A blind fit
    that is kept takes the names of the guided fit's outputs
    (:func:`studio_sep.separation.initial.match_outputs`). Each finished start is
    saved (``fit-<start>.npz``) and not redone after an interruption; a single start is
    the plain fit (its checkpoint only).

    Returns the kept fit, the record's fields (every start's final log-likelihood and
    the one kept) and the number of iterations run here.
    """
    from studio_sep.separation.initial import initial_model, match_outputs, reorder_outputs

    def blind_init():
        return initial_model(X_host, n_sources=init.G_NM.shape[0], init_kinds=BLIND_INIT, n_basis=settings.n_basis,
                             seed=settings.seed, sample_rate=settings.processing_sample_rate, n_fft=settings.n_fft)[0]

    fits, iterations_run, n_starts = {}, 0, len(settings.starts)
    for i, start in enumerate(settings.starts):
        # one start: the fit alone, as it always was (its checkpoint, no start file)
        path, fp_s = (start_fit_path(work, start), fingerprint("start", fp, start)) if n_starts > 1 else (None, fp)
        fits[start], ran = fit_or_reuse(X_host, blind_init if start == "blind" else lambda: init, settings, work,
                                        path, fp_s, report, resume=resume, index=i, count=n_starts,
                                        label=f"{start} start")
        iterations_run += ran
    final = {start: float(fit.log_likelihood[-1]) for start, fit in fits.items()}
    kept = max(settings.starts, key=lambda start: final[start])  # the first on a tie
    fit = fits[kept]
    fields = {"resumed_from_iteration": sum(f.iterations for f in fits.values()) - iterations_run,
              "iterations": fit.iterations if n_starts == 1 else {s: f.iterations for s, f in fits.items()},
              "starts": {"log_likelihood": {s: round(v, 6) for s, v in final.items()}, "kept": kept}}
    if kept != settings.starts[0]:
        order = match_outputs(fit.params, fits[settings.starts[0]].params)
        fit = type(fit)(reorder_outputs(fit.params, order), fit.log_likelihood, fit.ll_iterations)
        fields["starts"]["order"] = [int(k) for k in order]
    return fit, fields, iterations_run


def member_fit_path(work: Path, member: int, start: str | None = None) -> Path:
    """A member's finished fit; a later spatial start's (``start``) carry its name."""
    return work / (f"fit-{start}-member-{member}.npz" if start else f"fit-member-{member}.npz")


def fit_spatial_starts(X_host, settings: ResolvedSettings, work: Path, fp: str, report, *, resume: bool):
    """Fit the ensemble from every spatial start (``settings.spatial_starts``: the geometric
    one, and the spot mics' or the measured delays' one) and keep the one :func:`keep_start`
    picks from their members' final log-likelihoods (the model's own measure, never the truth).

    Returns what :func:`fit_ensemble` returns for the kept start, its fields with every
    start's mean final log-likelihood and the start kept (``spatial_starts``), and the
    kept start's name (None when there is one start).
    """
    from studio_sep.stages.prior import later_start

    starts, runs, iterations_run = settings.spatial_starts, {}, 0
    for j, start in enumerate(starts):
        runs[start] = fit_ensemble(X_host, settings, work, fp, report, resume=resume,
                                   start=later_start(settings, start), index=j, count=len(starts))
        iterations_run += runs[start][3]
    if len(starts) == 1:
        return (*runs[starts[0]][:3], iterations_run, None)
    finals = {start: [float(f.log_likelihood[-1]) for f in runs[start][1]] for start in starts}
    kept = keep_start(finals)
    members, fits, fields, _ = runs[kept]
    fields = {**fields, "resumed_from_iteration": sum(r[2]["resumed_from_iteration"] for r in runs.values()),
              "iterations": {start: r[2]["iterations"] for start, r in runs.items()},
              "spatial_starts": {"log_likelihood": {s: round(float(np.mean(v)), 6) for s, v in finals.items()},
                                 "spread": {s: round(float(np.std(v)), 6) for s, v in finals.items()},
                                 "kept": kept}}
    return members, fits, fields, iterations_run, kept


def keep_start(finals: dict[str, list[float]]) -> str:
    """The spatial start to keep, from every start's members' final log-likelihoods: the
    first (the typed geometry's) unless another's mean is higher by more than the spread of
    the members' values (their standard deviation, the larger of the two starts'), so that a
    difference the random spectral starts alone could make does not overrule the manifest.

    On the 15 zoo sessions with spot mics this keeps the better start on 12 (the plain higher
    mean: on 11), with the same distribution (benchmarks/README.md, "The pair start").
    """
    first, *others = finals
    if not others:
        return first
    best = max(others, key=lambda start: np.mean(finals[start]))
    margin = max(float(np.std(finals[first])), float(np.std(finals[best])))
    return best if np.mean(finals[best]) - np.mean(finals[first]) > margin else first


def fit_ensemble(X_host, settings: ResolvedSettings, work: Path, fp: str, report, *, resume: bool,
                 start: str | None = None, index: int = 0, count: int = 1):
    """Fit every member of the ensemble (``settings.ensemble``), each from its own initial
    model (:func:`studio_sep.stages.prior.prior_path`), and put their outputs in one order.

    Each finished member is saved (``fit-member-<k>.npz``, its outputs as fitted) and
    not redone after an interruption. Member k's outputs are matched to member 0's
    (:func:`studio_sep.separation.initial.match_outputs`: a member from a start that names
    the sources keeps them, one that does not takes member 0's names).

    ``start`` names a later spatial start (its initial models and fits carry its name);
    ``index`` of ``count`` places its fits in the stage's progress.

    Returns the members (outputs aligned), their fits (member 0's log-likelihood is
    the run's), the record's fields (every member's final log-likelihood and output
    order) and the number of iterations run here.
    """
    from studio_sep.separation.initial import match_outputs, reorder_outputs
    from studio_sep.stages.prior import prior_path

    K = settings.ensemble
    fits, iterations_run = [], 0
    for k in range(K):
        label = f"fit {k + 1}/{K}" if count == 1 else f"{settings.spatial_starts[index]} start, fit {k + 1}/{K}"
        fit, ran = fit_or_reuse(X_host, lambda: load_params(prior_path(work, k, start))[0], settings, work,
                                member_fit_path(work, k, start),
                                fingerprint("member", fp, k, *([start] if start else [])), report, resume=resume,
                                index=index * K + k, count=count * K, label=label)
        fits.append(fit)
        iterations_run += ran
    orders = [np.arange(fits[0].params.G_NM.shape[0])] + [match_outputs(f.params, fits[0].params) for f in fits[1:]]
    members = [reorder_outputs(f.params, order) for f, order in zip(fits, orders)]
    fields = {"resumed_from_iteration": sum(f.iterations for f in fits) - iterations_run,
              "iterations": [f.iterations for f in fits],
              "ensemble": {"members": K, "log_likelihood": [round(float(f.log_likelihood[-1]), 6) for f in fits],
                           "orders": [[int(i) for i in order] for order in orders]}}
    return members, fits, fields, iterations_run


def fastmnmf2_result(checkpoint):
    """A finished fit's checkpoint as a :class:`studio_sep.separation.fastmnmf2.FitResult`."""
    from studio_sep.separation import fastmnmf2

    return fastmnmf2.FitResult(checkpoint.params, checkpoint.log_likelihood, checkpoint.ll_iterations)
