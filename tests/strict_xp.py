"""A strict array module for tests: numpy underneath, but like cupy its arrays refuse
implicit conversion to numpy, so a stray ``np.`` call on "device" arrays fails on CPU.

``get_xp`` finds this module through ``__array_namespace__``; ``to_host`` brings arrays
back through ``.get()``, as with cupy.
"""

from __future__ import annotations

import types

import numpy as np


class StrictArray:
    __array_ufunc__ = None  # numpy ufuncs refuse these operands

    def __init__(self, a):
        self._a = np.asarray(a)

    # what numpy would need for an implicit conversion: refuse, as cupy does
    def __array__(self, *args, **kwargs):
        raise TypeError("StrictArray: implicit conversion to a NumPy array is not allowed (use .get())")

    def __array_function__(self, func, types, args, kwargs):
        return NotImplemented

    def __array_namespace__(self, api_version=None):
        return module

    def get(self):
        return self._a.copy()

    def __float__(self):
        if self._a.ndim:
            raise TypeError("only 0-d arrays convert to float")
        return float(self._a)

    def __repr__(self):
        return f"StrictArray({self._a!r})"

    # attributes
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    real = property(lambda self: _wrap(self._a.real))
    imag = property(lambda self: _wrap(self._a.imag))
    T = property(lambda self: _wrap(self._a.T))

    def __len__(self):
        return len(self._a)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key)] = _unwrap(value)

    def __getattr__(self, name):  # methods: reshape, transpose, sum, conj, copy, astype, ...
        if name.startswith("__"):  # no __array_interface__ / __array_struct__ back door
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        return lambda *args, **kwargs: _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))


def _binary(name):
    def op(self, other):
        if isinstance(other, np.ndarray) and other.ndim > 0:
            raise TypeError(f"StrictArray: mixing with a numpy array in {name}")
        return _wrap(getattr(self._a, name)(_unwrap(other)))
    return op


for _name in ("add", "sub", "mul", "truediv", "pow", "matmul", "floordiv", "mod"):
    for _form in (f"__{_name}__", f"__r{_name}__", f"__i{_name}__"):
        setattr(StrictArray, _form, _binary(_form.replace("__i", "__", 1) if _form.startswith("__i") else _form))
for _name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(StrictArray, _name, _binary(_name))
StrictArray.__neg__ = lambda self: _wrap(-self._a)
StrictArray.__abs__ = lambda self: _wrap(abs(self._a))


def _wrap(x):
    if isinstance(x, (np.ndarray, np.generic)) and not isinstance(x, np.dtype):
        return StrictArray(x)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


def _unwrap(x):
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, tuple):
        return tuple(_unwrap(v) for v in x)
    if isinstance(x, list):
        return [_unwrap(v) for v in x]
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _function(fn):
    return lambda *args, **kwargs: _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))


def asarray(x, dtype=None):
    if isinstance(x, StrictArray):
        return x if dtype is None else x.astype(dtype)
    return StrictArray(np.array(x, dtype=dtype))


module = types.ModuleType("strict_xp_module")
for _name in ("sqrt", "mean", "abs", "log", "exp", "cos", "sin", "matmul", "maximum", "minimum", "eye", "trace",
              "broadcast_to", "ascontiguousarray", "zeros", "ones", "arange", "concatenate", "stack", "einsum",
              "where", "sum", "empty", "empty_like", "zeros_like", "full", "isfinite", "all", "any", "real", "imag", "conj",
              "logical_and"):
    setattr(module, _name, _function(getattr(np, _name)))
module.asarray = asarray
module.pi = np.pi
module.float32, module.float64 = np.float32, np.float64
module.complex64, module.complex128 = np.complex64, np.complex128
module.linalg = types.SimpleNamespace(**{n: _function(getattr(np.linalg, n)) for n in ("solve", "inv", "slogdet", "svd", "norm", "det")})
module.fft = types.SimpleNamespace(**{n: _function(getattr(np.fft, n)) for n in ("rfft", "irfft", "fft", "ifft")})
