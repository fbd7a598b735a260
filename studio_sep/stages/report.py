"""The metrics report's text: the table rows and header of :func:`studio_sep.stages.evaluate.evaluate_run`'s
metrics, its Markdown page, and the label of a run's spectral prior."""

from __future__ import annotations

from pathlib import Path

from studio_sep.dsp.metrics import METRICS


def metrics_rows(metrics: dict) -> list[list[str]]:
    """Table rows: source, mic, then separated/mixture/improvement SDR, SIR, SAR, SI-SDR."""
    fmt = lambda v: "—" if v is None else f"{v:+.2f}"  # noqa: E731
    rows = []
    for source, per_mic in metrics["separated"].items():
        mics = [metrics["reference_mic"], metrics["stem_mics"][source]]
        for mic in dict.fromkeys(mics):
            sep, mix, imp = (metrics[k][source][mic] for k in ("separated", "mixture", "improvement"))
            rows.append([source, mic + (" (ref)" if mic == metrics["reference_mic"] else " (stem)"),
                         *(fmt(sep[k]) for k in METRICS), fmt(mix["sdr"]), fmt(imp["sdr"]), fmt(imp["si_sdr"])])
    for label, key in (("mean", "at_reference_mic"), ("mean", "at_stem_mic")):
        mean = metrics["means"][key]
        rows.append([label, "ref mic" if key == "at_reference_mic" else "stem mics",
                     *(fmt(mean["separated"][k]) for k in METRICS), fmt(mean["mixture"]["sdr"]),
                     fmt(mean["improvement"]["sdr"]), fmt(mean["improvement"]["si_sdr"])])
    return rows


METRICS_HEADER = ["source", "mic", "SDR", "SIR", "SAR", "SI-SDR", "mix SDR", "ΔSDR", "ΔSI-SDR"]


def metrics_markdown(metrics: dict) -> str:
    lines = [f"# Separation metrics: {metrics['session']}", "",
             f"init: {', '.join(metrics['init'])}; prior: {prior_label(metrics['prior'])}; reference mic: "
             f"{metrics['reference_mic']}; dB, BSS Eval filter length {metrics['filter_length']}. "
             "'mix' is the unprocessed mic signal; Δ is the improvement over it.", "",
             "| " + " | ".join(METRICS_HEADER) + " |", "|" + "---|" * len(METRICS_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in metrics_rows(metrics)]
    return "\n".join(lines) + "\n"


def prior_label(prior) -> str:
    """``nmf``, ``classnet (model.safetensors, sha256 1a2b3c4d…)``, ``classnet (AudioSep
    audiosep_base_4M_steps.ckpt, sha256 …)`` or ``none`` (older runs: a string)."""
    if not isinstance(prior, dict):
        return str(prior)
    if prior.get("model"):
        layout = "AudioSep " if prior.get("layout") == "audiosep" else ""
        return (f"{prior['kind']} ({layout}{Path(prior['model']).name}, "
                f"sha256 {str(prior.get('model_sha256'))[:12]}…)")
    return prior["kind"]
