"""The stages over one session (separate, evaluate, mix): they join files to arrays and own
the session's output folder."""

from studio_sep.stages.memory import default_budget_bytes, format_size, parse_size, peak_rss_bytes
from studio_sep.stages.pipeline import (
    METRICS_HEADER,
    SeparationOptions,
    evaluate_run,
    metrics_rows,
    mix_session,
    plan_memory,
    prior_label,
    read_images,
    resolve_settings,
    separate_session,
)
from studio_sep.stages.runrecord import WORK_DIR, FileHashes, session_lock

__all__ = ["METRICS_HEADER", "WORK_DIR", "FileHashes", "SeparationOptions", "default_budget_bytes", "evaluate_run",
           "format_size", "metrics_rows", "mix_session", "parse_size", "peak_rss_bytes", "plan_memory", "prior_label",
           "read_images", "resolve_settings", "separate_session", "session_lock"]
