"""What a chain is made of: :class:`PluginSpec`, one plugin with its parameter values.

Presets build specs (:mod:`studio_sep.mixing.presets`); the plugin host validates and
renders them. A spec is plain data so it can travel to a worker process as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ParamValue = float | int | bool | str


@dataclass(frozen=True)
class PluginSpec:
    """One plugin of a chain.

    Attributes
    ----------
    kind : {"builtin", "vst3"}
        A pedalboard built-in effect (``name`` is its class, e.g. ``"HighpassFilter"``)
        or an external VST3 plugin (``path`` is its ``.vst3`` bundle).
    name : str
        Class name (builtin) or the plugin's display name (vst3, informative).
    params : dict
        Parameter name → value, in the plugin's own names and units.
    path : Path or None
        The VST3 bundle.
    dual_mono : bool
        Run a mono (1-channel) plugin once per channel of a stereo signal.
    where : str
        Where the spec was written (``file: field``), for error messages.
    """

    kind: str
    name: str
    params: dict[str, ParamValue] = field(default_factory=dict)
    path: Path | None = None
    dual_mono: bool = False
    where: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (picklable, JSON-able) for worker processes and run.json."""
        return {"kind": self.kind, "name": self.name, "params": dict(self.params),
                "path": None if self.path is None else str(self.path), "dual_mono": self.dual_mono,
                "where": self.where}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PluginSpec:
        path = data.get("path")
        return cls(kind=data["kind"], name=data["name"], params=dict(data.get("params", {})),
                   path=None if path is None else Path(path), dual_mono=bool(data.get("dual_mono", False)),
                   where=data.get("where", ""))
