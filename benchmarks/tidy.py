"""What every results file shares: the columns of a tidy row, their order, and the one
way files are written (whole, atomically, with the umask's mode)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

COLUMNS = ["run_id", "timestamp", "git_commit", "machine", "device", "backend",
           "backend_version", "variant", "kind", "arch", "transform", "conditioner",
           "direction", "dim", "layers", "hidden", "bins", "dataset", "batch", "op", "metric",
           "value", "unit", "statistic", "repeats", "passes", "threads", "seed", "status",
           "error", "cell", "source", "counter", "note"]


def writable_mode() -> int:
    """The mode a new file gets under this process's umask (mkstemp's 0600 would hide a
    shared results folder from the rest of a group)."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("Umask:"))
        umask = int(line.split()[1], 8)
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)  # not thread-safe; only where /proc is missing
        os.umask(umask)
    return 0o666 & ~umask


def temporary_prefix(name: str) -> str:
    """The name a file is written under before its rename to ``name`` (a store tells a
    file still being written from a stray one by it)."""
    return f".{name}."


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers (and a run killed
    mid-write) see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, writable_mode())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in COLUMNS if c in df] + sorted(c for c in df if c not in COLUMNS)
    return df[cols]
