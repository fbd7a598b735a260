"""Long sessions in bounded memory: the memory model, the block plan, block separation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from studio_sep.io import audio as audio_io
from studio_sep.session import load_mics, load_session
from studio_sep.stages import (
    SeparationOptions,
    evaluate_run,
    memory,
    plan_memory,
    read_images,
    separate_session,
)
from studio_sep.util.errors import InputError

SETTINGS = dict(sample_rate=16000, processing_sample_rate=16000, n_mics=7, n_sources=3, n_basis=8, n_fft=1024,
                hop=256)


def test_parse_size() -> None:
    assert memory.parse_size("8G") == 8 * 1024**3
    assert memory.parse_size("512M") == 512 * 1024**2
    assert memory.parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert memory.parse_size(" 2 gb ") == 2 * 1000**3
    assert memory.parse_size("1048576") == 1024**2
    for bad in ("", "8X", "G", "-1G", "0", "1.2.3G", "eight gigs"):
        with pytest.raises(InputError, match="max-memory"):
            memory.parse_size(bad)


def test_estimate_grows_with_duration_mics_and_precision() -> None:
    by_duration = [memory.estimate_peak_bytes(s * 16000, **SETTINGS) for s in (5, 30, 120, 600, 1200)]
    assert by_duration == sorted(by_duration) and len(set(by_duration)) == len(by_duration)
    by_mics = [memory.estimate_peak_bytes(60 * 16000, **{**SETTINGS, "n_mics": m}) for m in (3, 5, 7, 9)]
    assert by_mics == sorted(by_mics) and len(set(by_mics)) == len(by_mics)
    # a 48 kHz recording processed at 16 kHz holds more than a 16 kHz one of the same length
    native48 = memory.estimate_peak_bytes(60 * 48000, **{**SETTINGS, "sample_rate": 48000})
    assert native48 > memory.estimate_peak_bytes(60 * 16000, **SETTINGS)
    f64, f32 = (memory.estimate_peak_bytes(600 * 16000, **SETTINGS, dtype=d) for d in ("float64", "float32"))
    # float32 is the default; its images stage is as large as float64's (measured on a 20-minute
    # session) plus the complex64 copy of the STFT, so its estimate is the larger one
    assert f32 > f64 and f32 == by_duration[3]


def test_plan_has_one_block_when_the_budget_is_large_and_blocks_when_small() -> None:
    n = 1200 * 48000
    settings = {**SETTINGS, "sample_rate": 48000}
    whole = memory.estimate_peak_bytes(n, **settings)
    one = memory.plan_blocks(n, budget_bytes=whole + 1, **settings)
    assert (one.n_blocks, one.block_samples, one.overlap_samples) == (1, n, 0)
    assert one.bounds() == [(0, n)] and "one pass" in one.describe()
    plan = memory.plan_blocks(n, budget_bytes=whole // 4, **settings)
    assert plan.n_blocks > 4 and plan.block_estimated_bytes <= whole // 4 < plan.estimated_bytes
    bounds = plan.bounds()
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (a0, a1), (b0, b1) in zip(bounds, bounds[1:]):
        assert b0 < a1 and a1 - b0 >= plan.overlap_samples and b1 > a1  # overlapping, moving forward
    assert plan.overlap_s == pytest.approx(memory.OVERLAP_S)
    text = plan.describe()
    assert f"{plan.n_blocks} blocks of" in text and "5 s overlap" in text and "> budget" in text
    # a slightly different budget (free memory moves) gives the same blocks
    assert memory.plan_blocks(n, budget_bytes=whole // 4 - 2**20, **settings).geometry() == plan.geometry()
    smaller = memory.plan_blocks(n, budget_bytes=whole // 8, **settings)
    assert smaller.n_blocks > plan.n_blocks
    with pytest.raises(InputError, match="raise --max-memory"):
        memory.plan_blocks(n, budget_bytes=200 * 2**20, **settings)


def test_default_budget_is_below_what_is_available() -> None:
    budget = memory.default_budget_bytes()
    available = memory._meminfo_available()
    assert 0 < budget and (available is None or budget < available)


def test_plan_memory_of_a_session(rendered_session: Path) -> None:
    session = load_session(rendered_session)
    assert not plan_memory(session, SeparationOptions(max_memory=64 * 2**30)).blocked
    plan = plan_memory(session, SeparationOptions(max_memory=_three_block_budget()))
    assert plan.n_blocks >= 3 and plan.bounds()[-1][1] == session.n_samples
    with pytest.raises(InputError, match="max-memory"):
        plan_memory(session, SeparationOptions(max_memory=0))


def _three_block_budget() -> int:
    """A budget that splits the 6 s, 16 kHz test session into at least 3 blocks."""
    return memory.block_peak_bytes(int(2.6 * 16000), 6 * 16000, **SETTINGS)


@pytest.fixture(scope="module")
def block_runs(rendered_session: Path, tmp_path_factory):
    session = load_session(rendered_session)
    out = tmp_path_factory.mktemp("blocks")
    events = []
    blocked = separate_session(session, out / "blocked", SeparationOptions(n_iter=30, max_memory=_three_block_budget()),
                               callback=lambda stage, done, total, detail="": events.append((stage, done, total, detail)))
    whole = separate_session(session, out / "whole", SeparationOptions(n_iter=30))
    metrics = {name: evaluate_run(session, out / name) for name in ("blocked", "whole")}
    return session, out, blocked, whole, metrics, events


def test_block_run_records_its_plan(block_runs) -> None:
    session, out, blocked, whole, _, events = block_runs
    sep = blocked.run["separation"]["memory"]
    assert sep["blocks"] >= 3 and sep["overlap_s"] > 0 and sep["budget_bytes"] == _three_block_budget()
    assert sep["block_estimated_bytes"] <= sep["budget_bytes"] < sep["estimated_bytes"]
    assert sep["reordered"] is False and len(sep["seams"]) == sep["blocks"] - 1
    assert whole.run["separation"]["memory"]["blocks"] == 1
    assert len(blocked.run["log_likelihood"]["blocks"]) == sep["blocks"]
    memory_events = [e for e in events if e[0] == "memory"]
    assert memory_events and "blocks of" in memory_events[0][3]
    separate = [e for e in events if e[0] == "separate"]
    assert separate[-1][1:3] == (30 * sep["blocks"], 30 * sep["blocks"])  # iterations counted over all blocks
    assert any(e[3].startswith(f"block 2/{sep['blocks']}, log-lik") for e in separate)


def test_block_images_add_back_to_the_mixture_at_every_mic(block_runs) -> None:
    session, out, *_ = block_runs
    images = read_images(out / "blocked" / session.name, session)
    mix = load_mics(session)
    assert images.shape == (3, len(session.mics), session.n_samples)
    assert np.abs(images.sum(axis=0) - mix).max() < 1e-5 * max(1.0, np.abs(mix).max()) + 1e-6


def test_block_sources_keep_their_names(block_runs) -> None:
    session, out, *_ = block_runs
    images = read_images(out / "blocked" / session.name, session)
    truth = np.stack([audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources])
    mic_names = [m.name for m in session.mics]
    for n, source in enumerate(session.sources):
        m = mic_names.index(source.spot_mic)
        corr = [np.corrcoef(images[n, m], truth[k, m])[0, 1] for k in range(3)]
        assert int(np.argmax(corr)) == n, (source.name, corr)


def test_block_separation_still_improves_clearly(block_runs) -> None:
    *_, metrics, _ = block_runs
    blocked = metrics["blocked"]["means"]["at_reference_mic"]["improvement"]["sdr"]
    whole = metrics["whole"]["means"]["at_reference_mic"]["improvement"]["sdr"]
    # 2 s blocks hold far less data than the whole 6 s: worse, but clearly a separation
    assert blocked > 3.0 and blocked > whole - 8.0, (blocked, whole)


class Interrupt(Exception):
    pass


def test_an_interrupted_block_run_resumes_to_the_same_images(block_runs, tmp_path: Path) -> None:
    session, out, blocked, *_ = block_runs
    options = SeparationOptions(n_iter=30, max_memory=_three_block_budget())

    def stop_in_block_2(stage, done, total, detail=""):
        if stage == "separate" and done == 30 + 25:  # block 2, after its checkpoint at 20
            raise Interrupt

    with pytest.raises(Interrupt):
        separate_session(session, tmp_path, options, callback=stop_in_block_2, force=False)
    work = tmp_path / session.name / ".studio-sep"
    assert (work / "fit-block-0.npz").is_file() and not (work / "fit-block-1.npz").exists()
    assert (work / "fit-checkpoint.npz").is_file()
    iterations = []
    result = separate_session(session, tmp_path, options, force=False,
                              callback=lambda stage, done, total, detail="": iterations.append((stage, done, detail)))
    assert result.stages == {"prior": "skipped", "separate": "ran", "images": "ran"}
    assert result.run["stages"]["separate"]["blocks_done_before"] == [1]
    assert ("separate", 50, "block 2/3, resumed at iteration 20") in iterations
    np.testing.assert_array_equal(read_images(tmp_path / session.name, session),
                                  read_images(out / "blocked" / session.name, session))
    again = separate_session(session, tmp_path, options, force=False)
    assert again.stages == {"prior": "skipped", "separate": "skipped", "images": "skipped"}
    # another plan is another result: the fingerprints hold the blocks
    other = separate_session(session, tmp_path, SeparationOptions(n_iter=30), force=False)
    assert other.stages["prior"] == "ran" and other.run["separation"]["memory"]["blocks"] == 1
    assert json.loads((tmp_path / session.name / "run.json").read_text())["separation"]["memory"]["blocks"] == 1


def test_block_crossfade_weights_sum_to_one() -> None:
    from studio_sep.stages.blocks import _crossfade_in

    for n in (1, 2, 7, 5000):
        fade = _crossfade_in(n)
        assert np.all((fade > 0) & (fade < 1)) and np.all(np.diff(fade) >= 0)
        np.testing.assert_allclose(fade + (1 - fade), 1.0, rtol=0, atol=1e-15)
        np.testing.assert_allclose(fade, 1 - fade[::-1], atol=1e-12)  # symmetric


def test_evaluation_over_budget_scores_segments(block_runs) -> None:
    session, out, *_, metrics, _ = block_runs
    whole = metrics["blocked"]
    assert "segment_s" not in whole
    segmented = evaluate_run(session, out / "blocked", max_memory=10 * 2**20)
    assert segmented["segment_s"] == 2**18 / 16000 and segmented["aggregate"] == "median over segments"
    # a 6 s session is one segment: the same scores as the whole signal
    assert segmented["separated"] == whole["separated"] and segmented["means"] == whole["means"]


def test_evaluation_of_a_long_session_scores_segments_whatever_the_budget(block_runs, monkeypatch) -> None:
    from studio_sep.stages import evaluate as evaluate_stage

    session, out, *_, metrics, _ = block_runs
    monkeypatch.setattr(evaluate_stage, "EVAL_MAX_BYTES", 10 * 2**20)
    monkeypatch.setattr(evaluate_stage, "EVAL_SEGMENT_S", 2.0)  # 6 s: segments of 2^14 samples, and a sliver
    segmented = evaluate_run(session, out / "blocked", max_memory=2**50)
    assert segmented["segment_s"] == 2**14 / 16000 and segmented["aggregate"] == "median over segments"
    assert segmented["separated"] != metrics["blocked"]["separated"]  # framewise medians, not whole-signal scores
    sdr = segmented["means"]["at_reference_mic"]["improvement"]["sdr"]
    assert sdr is not None and sdr > 0


def test_segment_scores_are_medians_of_the_finite_values() -> None:
    from studio_sep.stages.evaluate import _median_over_segments

    seg = [{k: np.array([v, 1.0]) for k in ("sdr", "sir", "sar", "si_sdr")} for v in (1.0, 5.0, np.inf, 2.0)]
    out = _median_over_segments(seg)
    np.testing.assert_array_equal(out["sdr"], [2.0, 1.0])


def test_session_log_likelihood_weights_blocks_and_holds_a_stopped_block_at_its_end() -> None:
    from studio_sep.stages.separate import session_log_likelihood

    per_block = [{"n_frames": 300, "iterations": [0, 5, 10, 15], "values": [-10.0, 1.0, 2.0, 2.5]},
                 {"n_frames": 100, "iterations": [0, 5], "values": [-6.0, 3.0]}]  # stopped at 5 (auto)
    iterations, values = session_log_likelihood(per_block)
    assert iterations == [0, 5, 10, 15]
    np.testing.assert_allclose(values, [(300 * -10 + 100 * -6) / 400, (300 * 1 + 100 * 3) / 400,
                                        (300 * 2 + 100 * 3) / 400, (300 * 2.5 + 100 * 3) / 400])


def test_blocks_whose_fits_stop_at_different_iterations_give_one_session_record(rendered_session: Path,
                                                                                tmp_path: Path) -> None:
    """The default ``--iterations auto`` in time blocks: each block's fit stops on its own,
    and run.json still holds the session's log-likelihood (this failed on a 20-minute session)."""
    session = load_session(rendered_session)
    options = SeparationOptions(n_iter="auto", max_memory=_three_block_budget())
    result = separate_session(session, tmp_path, options)
    ll = result.run["log_likelihood"]
    counts = {len(blk["iterations"]) for blk in ll["blocks"]}
    assert len(ll["blocks"]) >= 3 and len(counts) > 1, counts  # the blocks stopped at different iterations
    assert ll["iterations"] == sorted({i for blk in ll["blocks"] for i in blk["iterations"]})
    assert len(ll["values"]) == len(ll["iterations"]) and ll["final"] == ll["values"][-1]
    assert all(blk["iterations"][-1] <= 100 for blk in ll["blocks"])
