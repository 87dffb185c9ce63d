"""What every result row records about where it was measured."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path


@lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_MALLOC = "default"  # the policy this process runs under; every row records it


def keep_scratch_on_heap() -> str:
    """Serve every allocation from the heap and never hand freed heap back to the kernel.

    glibc maps each allocation above its mmap threshold (at most 32 MiB) afresh and unmaps
    it on free, so a compiled program whose per-call scratch is above that size page-faults
    all of it back in on every call: a jitted MAF gradient with 42 MiB of scratch took
    10,800 minor faults and 34 ms a call, 21 ms with them gone, while flowjax's 30 MiB
    fitted under the cap and never paid. What a cell costs should not hinge on which side
    of 32 MiB its scratch lands, so every measuring process runs with the mapping off.
    FLOWBENCH_MALLOC=default keeps glibc's own policy (recorded as ``default``)."""
    global _MALLOC
    if os.environ.get("FLOWBENCH_MALLOC", "heap") == "default" or _MALLOC != "default":
        return _MALLOC
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
        mallopt = None
    if mallopt is not None and mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1):
        _MALLOC = "heap"
    return _MALLOC


def set_threads(n: int) -> None:
    """One CPU thread count for every framework in this process (set before they start),
    and one allocator policy (``keep_scratch_on_heap``)."""
    keep_scratch_on_heap()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "FLOWBENCH_THREADS"):  # FLOWBENCH_THREADS: read by the tfp backend on load
        os.environ[var] = str(n)
    if "torch" in sys.modules:  # torch reads OMP_NUM_THREADS itself when imported later
        sys.modules["torch"].set_num_threads(n)


@lru_cache(maxsize=4)
def cpu_name(cpuinfo: str | None = None) -> str:
    """The processor model and its widest vector unit, from /proc/cpuinfo. Two hosts of one
    name (a VM) can carry different chips, and the matmul peaks move with them: on AMD's
    Zen 4 (family 25) AVX-512 runs at AVX2's rate, on Zen 5 (family 26) at twice it, and
    MKL, torch's CPU matmul, takes its AVX2 path on both."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip(), value.strip())
    name = first.get("model name") or platform.processor() or platform.machine()
    flags = set(first.get("flags", "").split())
    widest = next((f for f in ("avx512f", "avx2", "avx", "sse2") if f in flags), "")
    where = ", ".join(f"{k} {first[k]}" for k in ("cpu family", "model") if k in first)
    detail = "; ".join(x for x in (where, widest) if x)
    return f"{name} ({detail})" if detail else name


def describe() -> dict:
    return {"git_commit": git_commit(), "machine": platform.node(),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "malloc": _MALLOC}
