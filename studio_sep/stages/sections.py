"""What ``run.json`` records of a separation: the stages' fingerprints (what each result
depends on) and the top-level sections written with the images (session, settings,
log-likelihood, timings, versions)."""

from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import asdict

import numpy as np

from studio_sep import __version__
from studio_sep.dsp.backend import xp_for_device
from studio_sep.session import Session
from studio_sep.stages.images import source_naming
from studio_sep.stages.memory import MemoryPlan
from studio_sep.stages.runrecord import FileHashes, RunRecord, fingerprint
from studio_sep.stages.settings import ResolvedSettings
from studio_sep.util.atomic import file_sha256


def run_sections(session: Session, settings: ResolvedSettings, plan: MemoryPlan, record: RunRecord, shape_FTM,
                 spectral_init: str, order, has_residual: bool, log_likelihood: dict, blocks: dict,
                 images_s: float) -> dict:
    """The top-level sections of ``run.json`` written with the images stage."""
    fit_record = record.stage("separate") or {}
    return {
        "studio_sep": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "session": {"name": session.name, "manifest": str(session.path), "manifest_sha256": file_sha256(session.path),
                    "sample_rate": settings.sample_rate, "n_samples": session.n_samples,
                    "mics": [m.name for m in session.mics], "sources": [s.name for s in session.sources]},
        "separation": {**asdict(settings), "init": list(settings.init), "method": "fastmnmf2",
                       "prior": (record.stage("prior") or {}).get("prior", settings.prior),
                       "spectral_init": spectral_init, "shape_FTM": [int(v) for v in shape_FTM],
                       "n_sources": len(session.sources),
                       "iterations": settings.iterations, "iterations_run": fit_record.get("iterations"),
                       "source_order": {"geometry": "geometry", "spot mics": "assigned (spot-mic energy share)",
                                        "stem mics": "assigned (stem-mic energy share)"}[source_naming(session, settings)],
                       "assignment": [int(i) for i in order],
                       "residual_image": has_residual, "memory": {**plan.to_dict(), **blocks},
                       "starts": list(settings.starts), "start_kept": _start_kept(settings, fit_record),
                       **({"ensemble_fits": fit_record["ensemble"]} if "ensemble" in fit_record else {}),
                       **({"spatial_starts": fit_record["spatial_starts"]} if "spatial_starts" in fit_record else {})},
        "log_likelihood": log_likelihood,
        "timings_s": {"fit_s": fit_record.get("elapsed_s"), "per_iteration_s": fit_record.get("per_iteration_s"),
                      "images_s": round(images_s, 3)},
        "versions": versions(settings.device),
        "outputs": {"images": "images", "stems": "stems"},
    }


def _start_kept(settings: ResolvedSettings, fit_record: dict) -> dict:
    """Which start's fit was kept, with every start's final log-likelihood per bin."""
    starts = fit_record.get("starts")
    if not starts:
        return {"start": settings.starts[0]}
    kept = {"start": starts["kept"], "log_likelihood": starts["log_likelihood"]}
    if "order" in starts:
        kept["outputs_named_by"] = "spectral models of the init start's fit"
    return kept


def separation_fingerprints(session: Session, settings: ResolvedSettings, hashes: FileHashes,
                            plan: MemoryPlan | None = None) -> dict[str, str]:
    """Fingerprints of the prior, separate and images stages: everything each result
    depends on (audio by content, geometry, settings, the block plan, the stage before)."""
    mics = [{"name": m.name, "file": hashes(m.file), "channel": m.channel, "position": m.position_m,
             "pattern": m.pattern, "aim": [m.aim_azimuth_deg, m.aim_elevation_deg]} for m in session.mics]
    uses_reference = "dictionary" in settings.init or settings.prior["kind"] != "none"
    sources = [{"name": s.name, "position": s.position_m,
                "reference": hashes(s.reference) if uses_reference and s.reference else None}
               for s in session.sources]
    blocks = plan.geometry() if plan is not None else None
    prior = fingerprint("prior", mics, sources, settings.init, settings.n_basis, settings.n_fft, settings.hop,
                        settings.processing_sample_rate, settings.seed, settings.dictionary_iterations, blocks,
                        settings.prior, settings.stem_mics if settings.prior["kind"] != "none" or
                        settings.measured_delays else None,
                        *(["measured delays"] if settings.measured_delays else []),
                        *([[s.spot_mic for s in session.sources]] if "spot" in settings.init else []),
                        *(["wpe"] if settings.wpe else []),
                        *([f"ensemble {settings.ensemble}"] if settings.ensemble > 1 else []))
    separate = fingerprint("separate", prior, settings.n_iter, settings.normalize_every,
                           settings.log_likelihood_every, settings.device, settings.dtype,
                           *([settings.starts] if settings.starts != ("init",) else []),
                           *([f"stop {settings.stop_tolerance}"] if settings.stop_tolerance else []))
    images = fingerprint("images", separate, settings.sample_rate, settings.stem_mics, settings.subtype)
    return {"prior": prior, "separate": separate, "images": images}


def versions(device: str) -> dict[str, str]:
    import scipy

    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "machine": platform.machine(), "platform": platform.platform(terse=True)}
    if device == "cuda":
        versions["cupy"] = xp_for_device(device).__version__
    return versions
