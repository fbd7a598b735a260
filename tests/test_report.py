"""The HTML session report: its numbers on known signals, the report stage in a batch run
(recorded, skipped when current, OUT/index.html), `studio-sep report`, and the page in a
real browser (headless Debian Chromium through selenium: no console error, every player's
duration equal to its file's, A/B switching that keeps the position, loudness matching).

Set ``STUDIO_SEP_REPORT_SCREENSHOT=docs/images/report.png`` to refresh the docs' screenshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from studio_sep.batch.runner import RunOptions, SessionJob, run_batch
from studio_sep.dsp.metrics import bss_metrics, bss_sdr
from studio_sep.io import audio as audio_io
from studio_sep.session import load_session
from studio_sep.stages import SeparationOptions
from studio_sep.stages.report_data import framewise_sdr, leakage_db, loudness_lufs, matched_volumes
from tests.small_sessions import write_noise_band_session

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


# --------------------------------------------------------------------------- numbers


def test_leakage_estimate_is_the_share_of_energy_a_causal_filter_of_the_other_stems_explains() -> None:
    rng = np.random.default_rng(0)
    sr = 16000
    a, b, c = rng.standard_normal((3, 3 * sr))
    delayed = lambda x, k: np.concatenate([np.zeros(k), x[:-k]])  # noqa: E731
    # bleed: a delayed copy of another source's stem at a hundredth of the energy
    assert leakage_db(a + 0.1 * delayed(b, 40), b[None, :], sr) == pytest.approx(-20.0, abs=0.5)
    filtered = np.convolve(delayed(b, 40), [1.0, 0.5, 0.2])[: 3 * sr] / np.sqrt(1.29)
    two = leakage_db(a + 0.1 * filtered + 0.1 * delayed(c, 10), np.stack([b, c]), sr)
    assert two == pytest.approx(-17.0, abs=0.5)  # 2 %
    assert leakage_db(a, b[None, :], sr) < -30  # independent: nothing beyond chance
    # this source's bleed into the other stem arrives there later: a causal filter cannot use it
    assert leakage_db(delayed(a, 40) + 0.1 * b, delayed(b, 40)[None, :] + delayed(a, 80)[None, :], sr) < -15
    assert leakage_db(np.zeros(100), b[None, :100], sr) is None


def test_matched_volumes_bring_every_player_to_the_quietest_loudness() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(16000 * 3) * 0.1
    loud, quiet = loudness_lufs(x, 16000), loudness_lufs(0.5 * x, 16000)
    assert loud - quiet == pytest.approx(20 * np.log10(2), abs=0.01)
    assert loudness_lufs(np.zeros(16000), 16000) is None and loudness_lufs(x[:1000], 16000) is None
    volumes = matched_volumes({"mic": loud, "stem": quiet, "silent": None})
    assert volumes == {"mic": pytest.approx(0.5, abs=1e-3), "stem": 1.0, "silent": 1.0}


def test_framewise_sdr_scores_full_one_second_windows_and_skips_silent_ones() -> None:
    rng = np.random.default_rng(2)
    sr = 8000
    ref = rng.standard_normal((2, int(3.5 * sr)))
    noise = rng.standard_normal(ref.shape)
    est = ref + noise * 10 ** (-10 / 20)  # SDR ≈ 10 dB
    ref[1, sr:2 * sr] = 0  # source 1 silent in window 1
    sdr = framewise_sdr(ref, est, sr)
    assert sdr.shape == (2, 3)  # 3 full windows of 1 s; the last half second is not scored
    assert np.isnan(sdr[:, 1]).all()  # museval: a window with a silent reference is not scored
    assert np.allclose(sdr[:, [0, 2]], 10.0, atol=0.5)


def test_sdr_alone_equals_bss_eval_sdr() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((3, 8000))
    est = np.stack([np.convolve(ref[0], [0.6, 0.3, 0.1])[:8000] + 0.2 * ref[1],
                    ref[1] + 0.5 * rng.standard_normal(8000), -ref[2] + 0.05 * ref[0]])
    assert np.allclose(bss_sdr(ref, est, filter_length=64), bss_metrics(ref, est, filter_length=64)["sdr"],
                       atol=1e-6)


# --------------------------------------------------------------------------- a small run


@pytest.fixture(scope="module")
def small_session(tmp_path_factory) -> Path:
    """Two band-limited noise sources, each with an omni spot mic 0.3 m away, and a room
    mic; 3 s at 8 kHz, with ground truth: a run of a few seconds."""
    from scipy.signal import butter, sosfilt

    folder = tmp_path_factory.mktemp("small")
    sr, n = 8000, 8000 * 3
    rng = np.random.default_rng(0)
    dry = np.stack([sosfilt(butter(4, band, "bandpass", fs=sr, output="sos"), rng.standard_normal(n))
                    * np.repeat(rng.uniform(0.2, 1.0, size=n // 800), 800)
                    for band in ((100, 600), (1200, 3000))])
    sources = [(1.5, 1.0, 1.0), (4.5, 2.5, 1.0)]
    mics = [(x, y + 0.3, z) for x, y, z in sources] + [(3.0, 0.5, 1.5)]
    return write_noise_band_session(folder, "small", dry / 10, sample_rate=sr, sources=sources, mics=mics,
                                    source_names=["low", "high"], mic_names=["spot_low", "spot_high", "room"])


def _run(manifest: Path, out: Path):
    options = RunOptions(separation=SeparationOptions(init=("circular",), n_iter=10, n_basis=4, ensemble=1,
                                                      prior="none", device="cpu"),
                         presets=(REPO / "presets" / "spot_dry.toml",), reference_mic="room")
    return run_batch([SessionJob(index=0, manifest=manifest, out_root=out, options=options)])[0]


@pytest.fixture(scope="module")
def small_run(small_session: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    outcome = _run(small_session, out)
    assert outcome.status == "done", outcome.reason
    return out, outcome


def test_run_ends_with_the_report_stage_and_a_batch_index(small_session: Path, small_run) -> None:
    out, outcome = small_run
    assert list(outcome.stages)[-2:] == ["evaluate", "report"] and outcome.stages["report"] == "ran"
    page = out / "small" / "report" / "index.html"
    assert outcome.report == str(page) and page.is_file()
    run = json.loads((out / "small" / "run.json").read_text())
    assert "report/index.html" in run["stages"]["report"]["outputs"]
    separate_peak = run["stages"]["separate"]["peak_rss_bytes"]  # the process's VmHWM after the stage
    assert 50 * 2**20 < separate_peak <= run["stages"]["report"]["peak_rss_bytes"]
    text = page.read_text()
    assert "peak RSS after separate" in text
    assert "http://" not in text and "https://" not in text  # offline: nothing fetched
    for src in re.findall(r'(?:src|href)="([^"#:]+)"', text):  # every file the page names is there
        assert (page.parent / src).is_file(), src
    framewise = json.loads((page.parent / "framewise.json").read_text())
    assert framewise["window_s"] == 1.0 and len(framewise["times_s"]) == 3
    assert set(framewise["sources"]) == {"low", "high"}
    index = (out / "index.html").read_text()
    assert 'href="small/report/index.html"' in index and "done" in index

    again = _run(small_session, out)  # nothing changed: the page is current
    assert again.status == "up to date" and again.stages["report"] == "skipped"


def test_report_command_rebuilds_the_page_and_names_a_missing_run(small_session: Path, small_run,
                                                                  tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from studio_sep.cli import app

    out, _ = small_run
    page = out / "small" / "report" / "index.html"
    before = page.stat().st_mtime_ns
    result = CliRunner().invoke(app, ["report", str(small_session), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"HTML report: {page}"
    assert page.stat().st_mtime_ns > before

    missing = CliRunner().invoke(app, ["report", str(small_session), "--out", str(tmp_path / "none")])
    assert missing.exit_code == 2
    assert "no separation run found" in missing.output and "studio-sep run" in missing.output
    assert len(missing.output.strip().splitlines()) == 1 and "Traceback" not in missing.output
    assert not (tmp_path / "none").exists()  # nothing written where no run has been


def test_without_truth_the_page_shows_the_leakage_estimate_only(small_session: Path, small_run,
                                                                tmp_path: Path) -> None:
    import dataclasses

    from studio_sep.session import dump_session
    from studio_sep.stages.report_html import build_report

    out, _ = small_run
    shutil.copytree(out / "small", tmp_path / "out" / "small")
    session = load_session(small_session)
    blind = load_session(dump_session(dataclasses.replace(session, truth=None,
                                                          path=small_session.parent / "blind.toml")))
    page = build_report(blind, tmp_path / "out").path.read_text()
    assert 'data-role="truth' not in page and 'id="framewise"' not in page
    assert page.count("Leakage estimate (reference-free, not a measured metric)") == 2
    assert re.search(r"Leakage estimate[^<]*<b>[+-]\d+\.\d dB</b>", page)


def test_a_long_session_is_heard_and_plotted_on_an_excerpt(small_session: Path, small_run, tmp_path: Path,
                                                          monkeypatch) -> None:
    """Longer than LISTENING_SECONDS (here 1 s of the 3 s session): every player is a copy
    of the excerpt, the page says so, and the stems and images themselves are untouched."""
    from studio_sep.stages import report_html

    out, _ = small_run
    shutil.copytree(out / "small", tmp_path / "out" / "small")
    monkeypatch.setattr(report_html, "LISTENING_SECONDS", 1.0)
    session = load_session(small_session)
    page_path = report_html.build_report(session, tmp_path / "out").path
    page = page_path.read_text()
    assert page.count("the first 1 s of the session") == 2
    players = re.findall(r'<audio[^>]*src="([^"]+)" data-role="([^"]+)"', page)
    sources = [src for src, role in players if role != "remix"]
    assert len(sources) >= 8 and all(src.startswith("audio/") for src in sources), players
    for src in sources:
        x, sr = audio_io.read_audio(page_path.parent / src)
        assert x.shape[1] == sr, src  # 1 s
    stem, sr = audio_io.read_audio(tmp_path / "out" / "small" / "stems" / "low.wav")
    assert stem.shape[1] == session.n_samples


# --------------------------------------------------------------------------- the page in a browser


@pytest.fixture
def browser(tmp_path: Path):
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip("Debian chromium and chromium-driver not installed (scripts/install-system-deps.sh)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1500",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver given explicitly: selenium-manager never downloads one
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_page_in_a_browser_plays_every_file_and_switches_a_b(small_run, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    out, _ = small_run
    page = out / "small" / "report" / "index.html"
    browser.get(page.as_uri())
    assert _wait(browser, "return Array.from(document.querySelectorAll('audio'))"
                          ".every(a => a.readyState >= 1 || a.error)"), "players never loaded"
    players = browser.execute_script("return Array.from(document.querySelectorAll('audio')).map(a => "
                                     "[a.getAttribute('src'), a.duration, a.error && a.error.code])")
    assert len(players) == 2 * 5 + 1  # per source mic, stem, image at the ref mic, truth at both; the remix
    for src, duration, error in players:
        info = audio_io.audio_info(page.parent / src)
        assert error is None and duration == pytest.approx(info.n_samples / info.sample_rate, abs=0.05), src

    group = "document.querySelectorAll('section.group')[{g}]"
    audio = group + ".querySelector('.player.active audio')"
    role = "return " + group + ".querySelector('.player.active').dataset.role"
    assert browser.execute_script(role.format(g=0)) == "mic"
    browser.execute_script(f"{audio.format(g=0)}.currentTime = 1.25")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("x")  # A/B: mic → stem, same position
    assert browser.execute_script(role.format(g=0)) == "stem"
    assert browser.execute_script(f"return {audio.format(g=0)}.currentTime") == pytest.approx(1.25, abs=0.01)
    body.send_keys("x")  # and back
    assert browser.execute_script(role.format(g=0)) == "mic"
    body.send_keys("4")  # a player by its key: the truth at the stem mic
    assert browser.execute_script(role.format(g=0)) == "truth"
    assert browser.execute_script(f"return {audio.format(g=0)}.currentTime") == pytest.approx(1.25, abs=0.01)

    body.send_keys(" ")  # play, then switch while playing: the other player takes over from there
    assert _wait(browser, f"return {audio.format(g=0)}.currentTime > 1.4"), "did not play"
    body.send_keys("x")
    state = browser.execute_script(f"const a = {audio.format(g=0)}; return [a.dataset.role, a.paused, "
                                   "a.currentTime, Array.from(document.querySelectorAll('audio'))"
                                   ".filter(b => !b.paused).length]")
    assert state[0] == "mic" and state[1] is False and state[2] > 1.4 and state[3] == 1
    body.send_keys(" ")

    volumes = browser.execute_script("return Array.from(document.querySelectorAll('audio[data-volume]'))"
                                     ".map(a => [a.volume, Number(a.dataset.volume)])")
    assert all(v == pytest.approx(want, abs=1e-6) for v, want in volumes) and min(w for _, w in volumes) < 1
    body.send_keys("l")  # loudness matching off: every player at full volume
    assert browser.execute_script("return Array.from(document.querySelectorAll('audio[data-volume]'))"
                                  ".every(a => a.volume === 1)")
    body.send_keys("l")
    body.send_keys("j")  # next source
    current = "return document.querySelector('section.group.current').dataset.source"
    assert browser.execute_script(current) == "high"

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("STUDIO_SEP_REPORT_SCREENSHOT"):  # the docs' image: 256 colours keep it small
        from PIL import Image

        with Image.open(shot) as image:
            image.convert("RGB").quantize(256).save(os.environ["STUDIO_SEP_REPORT_SCREENSHOT"], optimize=True)
