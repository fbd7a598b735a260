"""How much memory a separation takes, how much there is, and how to split a session.

:func:`estimate_peak_bytes` models the peak resident memory of
:func:`studio_sep.stages.separate.separate_session` (all three stages, fresh run) as the
largest of its phases, each a sum of the arrays alive at that moment:

==========  ==================================================================
load        mics at the native rate (M·S·8), the resampled signal (M·P·8) and
            the resampler's temporaries
stft        + the padded signal, the windowed frames (M·T·n_fft·8, twice) and
            the spectrum before and after its transposition (X: F·T·M·16, twice)
prior       + the geometric demixer's output Qx (F·T·N·16), its power and the
            NMF temporaries (a few F·T·8)
fit         + the normalised copy of X, the fused kernels' copy of it split into real
            and imaginary parts (:class:`studio_sep.separation.host_kernels.HostState`:
            the CPU fit keeps no x·xᴴ cache), x̃ (F·T·M), λ (N·F·T), the two
            per-source sums (2·N·F·T), H and the Q·x temporaries
images      + Q·x, λ, 1/ỹ, one source's mask and image (F·T·M), the inverse
            STFT's frames, that source's image at the processing and the native
            rate, and (when resampling) the running sum for the residual; with an
            ensemble of fits, the running sum of the members' images (F·T·M)
==========  ==================================================================

plus a constant for the interpreter and the imported libraries
(:data:`BASELINE_BYTES`), times :data:`SAFETY` for what the model leaves out
(allocator slack, BLAS and FFT scratch).

In block mode (a :class:`MemoryPlan` with several blocks) every block is a whole
separation of ``block`` samples, and the images are assembled at the end one
(source, mic) at a time, which adds ``S·8`` bytes a few times over; see
:func:`block_peak_bytes`.

Calibration (benchmarks/README.md, "Memory model", one core, numpy, float64): peak
RSS (VmHWM of a fresh process) of ``separate_session`` on slices of the 300 s
rendered trio (7 mics, 3 sources, K=8, 16 kHz) and on a 48 kHz copy processed at
16 kHz, 15–150 s in one pass and 150 s in 10 blocks. The estimate was above the
measured peak in every case, by 10–16 % (``benchmarks/memory.py``; the table is in
benchmarks/README.md). The model is for the CPU (numpy); with ``device="cuda"`` it
counts the host arrays only (the fit's arrays then live in GPU memory, which the
budget does not cover).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from studio_sep.session import Session
from studio_sep.stages.settings import DEFAULT_DTYPE, ResolvedSettings, SeparationOptions, resolve_settings
from studio_sep.util.errors import InputError

GiB = 1024**3
MiB = 1024**2
#: Resident memory of the interpreter with numpy, scipy, soundfile and studio-sep
#: imported (measured: 105–125 MiB on this machine kind).
BASELINE_BYTES = 160 * MiB
#: Factor over the sum of the modelled arrays (allocator slack, FFT/BLAS scratch).
SAFETY = 1.10
#: What :func:`default_budget_bytes` leaves to everything else on the machine.
MARGIN_FRACTION = 0.15
MARGIN_MIN_BYTES = 1 * GiB
#: Block planning: overlap between consecutive blocks, and the shortest block allowed.
OVERLAP_S = 5.0
MIN_OVERLAP_S = 0.25
MIN_BLOCK_S = 1.0
#: A block is at least this many times its overlap (the overlap is shrunk to fit).
BLOCK_OVER_OVERLAP = 4


def _n_frames(n_samples: int, n_fft: int, hop: int) -> int:
    pad = n_fft - hop
    return -(-(n_samples + 2 * pad - n_fft) // hop) + 1


def estimate_peak_bytes(
    n_samples: int, *, sample_rate: int, processing_sample_rate: int, n_mics: int, n_sources: int,
    n_basis: int, n_fft: int, hop: int, dtype: str = DEFAULT_DTYPE, device: str = "cpu", ensemble: int = 1,
) -> int:
    """Estimated peak resident memory (bytes) of separating ``n_samples`` native samples
    in one pass (see the module docstring for what is counted); an ``ensemble`` of fits
    adds the running sum of the members' images of one source (F·T·M complex)."""
    S, M, N, K = int(n_samples), int(n_mics), int(n_sources), int(n_basis)
    resampled = processing_sample_rate != sample_rate
    P = round(S * processing_sample_rate / sample_rate)
    F, T = n_fft // 2 + 1, _n_frames(P, n_fft, hop)
    r = 4 if dtype == "float32" else 8
    x_native = M * S * 8
    x_proc = M * P * 8 if resampled else 0
    X_host = F * T * M * 16
    frames = M * T * n_fft * 8
    FT = F * T

    load = x_native + (3 * x_proc if resampled else 0)
    stft = x_native + x_proc + M * (P + 2 * n_fft) * 8 + max(2 * frames, frames + X_host, 2 * X_host)
    persistent = x_native + x_proc + X_host
    prior = persistent + FT * N * 16 + 2 * FT * N * 8 + 5 * FT * 8
    if device == "cuda":  # the fit and the Wiener filter run in GPU memory
        fit = persistent + N * K * T * 8 * 2
        images = persistent + (x_native if resampled else 0) + M * T * n_fft * r + M * P * 8 + 2 * x_native
    else:
        X_dev = FT * M * 2 * r
        X_copy = X_dev if r == 4 else 0  # the complex64 copy of X for a float32 fit
        Qx_power, lam, H = FT * M * r, N * FT * r, N * K * T * r
        work = 2 * lam  # the fused kernels' two per-source sums (separation.host_kernels.HostState)
        fitting = X_dev + 4 * Qx_power + lam + work + H  # X_dev here: HostState's split copy of x
        fit = persistent + X_copy + X_dev + max(2 * FT * M * 8, fitting)
        # The images stage's terms count 8 bytes whatever the fit's dtype: in float32 a 20-minute,
        # 48 kHz session peaked at 9.9 GiB in its 304 s blocks where 4-byte terms estimated 7.8
        # (its float64 run, 204 s blocks: 5.9 GiB against 6.9; benchmarks/README.md).
        Qx_power8, lam8, X_dev8 = FT * M * 8, N * FT * 8, FT * M * 16
        istft = 2 * M * T * n_fft * 8 + 2 * M * P * 8
        after_istft = M * P * 8 + 2 * x_native
        images = (persistent + X_copy + (x_native if resampled else 0) + lam8 + 2 * Qx_power8 + X_dev8
                  + Qx_power8 + X_dev8 + max(istft, after_istft))
    if ensemble > 1:  # the running sum of the members' images of one source
        images += FT * M * 2 * r
    peak = max(load, stft, prior, fit, images)
    return int(BASELINE_BYTES + SAFETY * peak)


def assembly_bytes(n_samples: int) -> int:
    """Extra memory of assembling one (source, mic) image of a block run: the whole
    image at the native rate (float64), its float32 copy for the file and the
    segments read back."""
    return int(SAFETY * n_samples * (8 + 4 + 8))


def block_peak_bytes(block_samples: int, n_samples: int, **settings) -> int:
    """Peak of a block run: the larger of one block's separation and the assembly."""
    return max(estimate_peak_bytes(block_samples, **settings), BASELINE_BYTES + assembly_bytes(n_samples))


@dataclass(frozen=True)
class MemoryPlan:
    """How a session is separated: in one pass, or in overlapping time blocks.

    Block boundaries are in native samples; block ``b`` covers
    ``[starts[b], starts[b] + block_samples)`` (the last block ends at the session's
    end), consecutive blocks overlap by ``overlap_samples``.
    """

    n_samples: int
    sample_rate: int
    estimated_bytes: int  #: one pass over the whole session
    budget_bytes: int
    n_blocks: int
    block_samples: int
    overlap_samples: int
    block_estimated_bytes: int  #: peak of the block run (equal to estimated_bytes for one block)

    @property
    def blocked(self) -> bool:
        return self.n_blocks > 1

    @property
    def block_s(self) -> float:
        return self.block_samples / self.sample_rate

    @property
    def overlap_s(self) -> float:
        return self.overlap_samples / self.sample_rate

    @property
    def starts(self) -> tuple[int, ...]:
        step = self.block_samples - self.overlap_samples
        return tuple(min(b * step, self.n_samples - self.block_samples) for b in range(self.n_blocks))

    def bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` native samples of every block."""
        return [(s, min(s + self.block_samples, self.n_samples)) for s in self.starts]

    def geometry(self) -> dict:
        """What the results depend on (for fingerprints): not the budget."""
        return {"n_blocks": self.n_blocks, "block_samples": self.block_samples,
                "overlap_samples": self.overlap_samples}

    def describe(self) -> str:
        est, budget = format_size(self.estimated_bytes), format_size(self.budget_bytes)
        if not self.blocked:
            return f"estimated peak {est} ≤ budget {budget}: separating in one pass"
        return (f"estimated peak {est} > budget {budget}: separating in {self.n_blocks} blocks of "
                f"{self.block_s:.0f} s with {self.overlap_s:.3g} s overlap "
                f"(est. {format_size(self.block_estimated_bytes)} each)")

    def to_dict(self) -> dict:
        return {"blocks": self.n_blocks, "block_s": round(self.block_s, 4), "overlap_s": round(self.overlap_s, 4),
                "block_samples": self.block_samples, "overlap_samples": self.overlap_samples,
                "estimated_bytes": self.estimated_bytes, "block_estimated_bytes": self.block_estimated_bytes,
                "budget_bytes": self.budget_bytes}


def plan_blocks(n_samples: int, *, budget_bytes: int, sample_rate: int, processing_sample_rate: int,
                n_mics: int, n_sources: int, n_basis: int, n_fft: int, hop: int, dtype: str = DEFAULT_DTYPE,
                device: str = "cpu", overlap_s: float = OVERLAP_S, ensemble: int = 1) -> MemoryPlan:
    """The fewest overlapping blocks whose estimated peak fits the budget.

    The plan depends on the budget only through the number of blocks, so a budget
    that moves a little (free memory varies) gives the same blocks and a resumed run
    finds its finished blocks again.

    Raises
    ------
    InputError
        When even the shortest block (:data:`MIN_BLOCK_S`) does not fit the budget.
    """
    settings = dict(sample_rate=sample_rate, processing_sample_rate=processing_sample_rate, n_mics=n_mics,
                    n_sources=n_sources, n_basis=n_basis, n_fft=n_fft, hop=hop, dtype=dtype, device=device)
    whole = estimate_peak_bytes(n_samples, **settings, ensemble=ensemble)  # in blocks: one fit
    if whole <= budget_bytes:
        return MemoryPlan(n_samples, sample_rate, whole, budget_bytes, 1, n_samples, 0, whole)
    # block starts must fall on whole samples at the processing rate too
    from fractions import Fraction

    align = Fraction(processing_sample_rate, sample_rate).denominator
    # minimum block: a second, and enough frames for the fit (T ≥ M) with room to spare
    min_block = max(round(MIN_BLOCK_S * sample_rate), 4 * n_fft * sample_rate // processing_sample_rate)

    def layout(n_blocks: int) -> tuple[int, int]:
        overlap = round(overlap_s * sample_rate)
        while True:
            block = -(-(n_samples + (n_blocks - 1) * overlap) // n_blocks)
            if block >= BLOCK_OVER_OVERLAP * overlap or overlap <= MIN_OVERLAP_S * sample_rate:
                break
            overlap = max(round(MIN_OVERLAP_S * sample_rate), overlap // 2)
        block = -(-(n_samples + (n_blocks - 1) * overlap) // n_blocks)
        overlap -= overlap % align
        block += -block % align
        return min(block, n_samples), overlap

    for n_blocks in range(2, n_samples // max(min_block // 2, 1) + 2):
        block, overlap = layout(n_blocks)
        if block < min_block:
            break
        peak = block_peak_bytes(block, n_samples, **settings)
        if peak <= budget_bytes:
            return MemoryPlan(n_samples, sample_rate, whole, budget_bytes, n_blocks, block, overlap, peak)
    smallest = block_peak_bytes(min_block, n_samples, **settings)
    raise InputError(None, "max-memory",
                     f"budget {format_size(budget_bytes)} is below what even {MIN_BLOCK_S:g} s blocks need "
                     f"(est. {format_size(smallest)})",
                     f"raise --max-memory to at least {format_size(smallest)}, or use a lower processing rate")


# --------------------------------------------------------------------------- budget


def default_budget_bytes() -> int:
    """Memory this process may use: the available memory (MemAvailable, or a cgroup's
    limit minus its usage when lower) less a margin for everything else
    (:data:`MARGIN_FRACTION`, at least :data:`MARGIN_MIN_BYTES`)."""
    available = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None:
        available = min(available, limit) if available else limit
    if not available:
        available = 8 * GiB  # unknown machine: a conservative guess
    margin = max(MARGIN_MIN_BYTES, int(MARGIN_FRACTION * available))
    return max(available - margin, available // 2)


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1); None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if not text.isdigit() or int(text) >= 2**60:  # "max" or the v1 "unlimited" value
            return None
        try:
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            usage = 0
        return max(int(text) - usage, 0)
    return None


_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1000, "KIB": 1024, "M": MiB, "MB": 1000**2, "MIB": MiB,
          "G": GiB, "GB": 1000**3, "GIB": GiB, "T": 1024**4, "TB": 1000**4, "TIB": 1024**4}


def parse_size(text: str | int) -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"2GB"`` or a plain number of bytes.

    Single letters (K, M, G, T) and the IEC forms (KiB, MiB, GiB, TiB) are powers of
    1024; KB, MB, GB, TB are powers of 1000. Case and spaces do not matter.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = match.group(2).upper() if match else None
        if not match or unit not in _UNITS:
            raise InputError(None, "max-memory", f"{text!r} is not a memory size",
                             "write a number with a unit, e.g. 8G, 512M or 1.5GiB")
        value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value <= 0:
        raise InputError(None, "max-memory", f"{text!r} is not a positive size", "e.g. 8G")
    return int(value)


def format_size(n_bytes: int | float) -> str:
    """``31.2 GiB``, ``512.0 MiB``."""
    if abs(n_bytes) >= GiB:
        return f"{n_bytes / GiB:.1f} GiB"
    return f"{n_bytes / MiB:.1f} MiB"


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (VmHWM), or None off Linux."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def plan_memory(session: Session, options: SeparationOptions = SeparationOptions(), *,
                settings: ResolvedSettings | None = None) -> MemoryPlan:
    """Estimated peak memory of separating ``session`` with these settings, the budget
    (``options.max_memory``, else :func:`studio_sep.stages.memory.default_budget_bytes`) and,
    when the estimate exceeds it, the overlapping time blocks
    :func:`studio_sep.stages.separate.separate_session`
    will use. Print its ``describe()`` before a separation."""
    settings = settings or resolve_settings(session, options)
    budget = options.max_memory if options.max_memory is not None else default_budget_bytes()
    if budget <= 0:
        raise InputError(None, "max-memory", f"{budget} bytes is not a budget", "give a positive size, e.g. 8G")
    return plan_blocks(session.n_samples, budget_bytes=int(budget), sample_rate=settings.sample_rate,
                       processing_sample_rate=settings.processing_sample_rate, n_mics=len(session.mics),
                       n_sources=len(session.sources), n_basis=settings.n_basis, n_fft=settings.n_fft,
                       hop=settings.hop, dtype=settings.dtype, device=settings.device, ensemble=settings.ensemble)
