"""What every result row records about where it was measured."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata


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


def describe() -> dict:
    return {"git_commit": git_commit(), "machine": platform.node(),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}
