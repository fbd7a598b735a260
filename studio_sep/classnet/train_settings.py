"""CLASS-net training's settings, checked before any work (:func:`check_settings`)."""

from __future__ import annotations

import math

from studio_sep.classnet.query import QueryEncoder
from studio_sep.classnet.train_loss import MASK_BCE_BINS
from studio_sep.util.errors import InputError


def check_settings(*, query, query_encoder, mode, steps, batch_size, crop_s, lr, seed, threads, checkpoint_every,
                   validate_every, chunk_steps, sdr_weight, balance, mask_bce_weight, mask_bce_bins,
                   timbre_db=0.0) -> None:
    """Refuse a setting :func:`studio_sep.classnet.train.train` cannot use (one :class:`InputError`
    naming the field and the fix)."""
    def bad(field, problem, fix):
        raise InputError(None, field, problem, fix)

    if query not in ("learned", "clap"):
        bad("query", f"must be 'learned' or 'clap', got {query!r}", "use 'learned' (no downloaded weights)")
    if query == "clap" and query_encoder is None:
        bad("query_encoder", "query='clap' needs the encoder", "pass query_encoder=<a CLAP QueryEncoder>")
    if query == "learned" and query_encoder is not None:
        bad("query_encoder", "is given but query='learned' trains its own", "pass query='clap' to use it")
    if query_encoder is not None and not isinstance(query_encoder, QueryEncoder):
        bad("query_encoder", f"{type(query_encoder).__name__} lacks name / sha256 / condition()",
            "pass an object implementing studio_sep.classnet.query.QueryEncoder")
    if mode not in ("full", "decoder"):
        bad("mode", f"must be 'full' or 'decoder', got {mode!r}", "use 'decoder' for decoder-only fine-tuning")
    for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1), ("threads", threads, 1)):
        if not (isinstance(value, int) and value >= low):
            bad(name, f"must be an integer ≥ {low}, got {value!r}", "see train()'s docstring")
    if balance not in ("class", "none"):
        bad("balance", f"must be 'class' or 'none', got {balance!r}", "use 'class' (every class equally often)")
    for name, value, fix in (("sdr_weight", sdr_weight, "0.02"), ("mask_bce_weight", mask_bce_weight, "0.3"),
                             ("timbre_db", timbre_db, "6")):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            bad(name, f"must be a number ≥ 0, got {value!r}", f"use e.g. {fix} (0: without that term)")
    if mask_bce_bins not in MASK_BCE_BINS:
        bad("mask_bce_bins", f"must be 'magnitude' or 'uniform', got {mask_bce_bins!r}", "use 'magnitude'")
    for name, value in (("checkpoint_every", checkpoint_every), ("validate_every", validate_every),
                        ("chunk_steps", chunk_steps)):
        if value is not None and not (isinstance(value, int) and value >= 1):
            bad(name, f"must be a positive integer or None, got {value!r}", "see train()'s docstring")
    if not isinstance(seed, int):
        bad("seed", f"must be an integer, got {seed!r}", "use e.g. 0")
    for name, value in (("crop_s", crop_s), ("lr", lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            bad(name, f"must be a positive number, got {value!r}", "see train()'s docstring")
    if round(crop_s * 16000) < 1024:
        bad("crop_s", f"{crop_s} s is shorter than one STFT frame (1024 samples)", "use e.g. 3.0")
