"""Shared fixtures: one short rendered reference session for the whole test run."""

from __future__ import annotations

from pathlib import Path

import pytest

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
SESSION_SECONDS = 6.0
SESSION_RATE = 16000


@pytest.fixture(scope="session")
def rendered_session(tmp_path_factory) -> Path:
    """A 6 s, 16 kHz render of the reference trio (TimGM6mb, seed 0); returns its manifest."""
    from studio_sep.sim import SimulationSettings, simulate_session

    if not SOUNDFONT.is_file():
        pytest.skip("TimGM6mb.sf2 not installed (apt-get install timgm6mb-soundfont)")
    folder = tmp_path_factory.mktemp("trio")
    settings = SimulationSettings(seed=0, duration_s=SESSION_SECONDS, sample_rate=SESSION_RATE,
                                  soundfont=SOUNDFONT, reference_duration_s=6.0)
    return simulate_session(folder, settings).manifest


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the test (tiny models run fastest so on a small machine)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
