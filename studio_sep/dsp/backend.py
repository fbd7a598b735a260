"""Array backends: numpy on the CPU, cupy on the GPU. The only module importing cupy.

Algorithms call :func:`get_xp` on their inputs and use the module it returns, so one
code path runs on both. Data crosses CPU↔GPU only through :func:`to_device` and
:func:`to_host`, at the edges of a stage.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from studio_sep.util.errors import InputError

DEVICES = ("cpu", "cuda", "auto")


def get_xp(*arrays: Any) -> types.ModuleType:
    """The array module (numpy or cupy) of the given arrays.

    Any object exposing ``__array_namespace__`` or living in a module named like cupy
    is dispatched to that module; everything else is numpy.
    """
    for a in arrays:
        module = type(a).__module__.split(".")[0]
        if module == "cupy":
            import cupy

            return cupy
        namespace = getattr(a, "__array_namespace__", None)
        if namespace is not None and module != "numpy":
            return namespace()
    return np


def cupy_or_none() -> types.ModuleType | None:
    """cupy if it imports and sees a GPU, else None."""
    try:
        import cupy
    except ImportError:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # noqa: BLE001 - any CUDA runtime failure means: no usable GPU
        return None
    return cupy


def resolve_device(device: str) -> str:
    """Turn ``cpu``/``cuda``/``auto`` into ``cpu`` or ``cuda``.

    ``auto`` picks cuda when cupy and a GPU are available. Asking for ``cuda`` without
    them is an error, never a silent fallback to the CPU.
    """
    if device not in DEVICES:
        raise InputError(None, "device", f"{device!r} is not one of {', '.join(DEVICES)}", "pick one of those")
    if device == "cpu":
        return "cpu"
    available = cupy_or_none() is not None
    if device == "cuda" and not available:
        raise InputError(None, "device", "cuda requested but cupy or a CUDA GPU is not available",
                         "install studio-sep[gpu] on a machine with an NVIDIA GPU, or use --device cpu")
    return "cuda" if available else "cpu"


def xp_for_device(device: str) -> types.ModuleType:
    """The array module for a resolved device."""
    if device == "cuda":
        import cupy

        return cupy
    return np


def to_device(x: np.ndarray, xp: types.ModuleType) -> Any:
    """Move a host array to the backend ``xp`` (no copy for numpy)."""
    return x if xp is np else xp.asarray(x)


def to_host(x: Any) -> np.ndarray:
    """Bring an array back to a numpy array on the host."""
    if isinstance(x, np.ndarray):
        return x
    get = getattr(x, "get", None)
    if get is not None:  # cupy
        return get()
    return np.asarray(x)


def device_spectrogram(X_host: np.ndarray, device: str, dtype: str) -> tuple[types.ModuleType, Any]:
    """The array module of ``device`` and ``X_host`` on it, as the complex type of the real
    ``dtype`` (float32 → complex64, float64 → complex128)."""
    xp = xp_for_device(device)
    complex_dtype = np.result_type(np.dtype(dtype), np.complex64)
    return xp, to_device(X_host.astype(complex_dtype, copy=False), xp)
