"""The stages over one session (separate, evaluate, mix): they join files to arrays and own
the session's output folder.

settings.py resolves a run's settings; separate.py runs prior.py → fit.py → images.py (or
blocks.py over time blocks), with checkpoints.py and sections.py for its files and
``run.json``; evaluate.py and report.py score a run; mix.py mixes it; memory.py plans it;
runrecord.py records every stage.
"""

from studio_sep.stages.evaluate import evaluate_run
from studio_sep.stages.images import read_images
from studio_sep.stages.memory import (
    default_budget_bytes,
    format_size,
    parse_size,
    peak_rss_bytes,
    plan_memory,
)
from studio_sep.stages.mix import MixOutcome, mix_session
from studio_sep.stages.report import METRICS_HEADER, metrics_rows, prior_label
from studio_sep.stages.runrecord import WORK_DIR, FileHashes, session_lock
from studio_sep.stages.separate import SeparationResult, separate_session
from studio_sep.stages.settings import ResolvedSettings, SeparationOptions, resolve_settings

__all__ = ["METRICS_HEADER", "WORK_DIR", "FileHashes", "MixOutcome", "ResolvedSettings", "SeparationOptions",
           "SeparationResult", "default_budget_bytes", "evaluate_run", "format_size", "metrics_rows",
           "mix_session", "parse_size", "peak_rss_bytes", "plan_memory", "prior_label", "read_images", "resolve_settings",
           "separate_session", "session_lock"]
