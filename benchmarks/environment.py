"""What every result row records about where it was measured."""

from __future__ import annotations

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


def set_threads(n: int) -> None:
    """One CPU thread count for every framework in this process (set before they start)."""
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
            "cpu": cpu_name(), "cpu_count": os.cpu_count()}
