"""Results files: tidy rows in CSV, written atomically, read back to resume and merged.

One row is one measurement (see ``COLUMNS`` for the fields every row carries). A cell is
done once its ``status`` row is in the file; a run killed midway lost at most the cell it
was running, and a rerun picks up from there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["run_id", "timestamp", "git_commit", "machine", "device", "backend",
           "backend_version", "variant", "kind", "arch", "transform", "conditioner",
           "direction", "dim", "layers", "hidden", "bins", "dataset", "batch", "op", "metric",
           "value", "unit", "statistic", "repeats", "passes", "threads", "seed", "status",
           "error", "cell", "source", "counter", "note"]
# one measurement: a later row with the same key replaces an earlier one (--force, merge)
ROW_KEY = ["cell", "backend", "op", "metric", "statistic", "batch", "step", "source"]


class StoreError(OSError):
    """Rows that could not be stored (disk full, the folder gone); what was stored before
    stays, and a rerun resumes from it."""


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


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers (and a run killed
    mid-write) see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, writable_mode())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read(path, problems: list | None = None) -> pd.DataFrame:
    """The rows of a results store (a folder) or a results CSV. A store's unreadable
    files are appended to ``problems`` (name and reason) and left out."""
    path = Path(path)
    if path.is_dir():
        from .store import Store
        store = Store(path, create=False)
        df = store.read()
        if problems is not None:
            problems.extend(store.problems)
        return df
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path, low_memory=False)


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in COLUMNS if c in df] + sorted(c for c in df if c not in COLUMNS)
    return df[cols]


def _key_text(col: pd.Series) -> pd.Series:
    """A key column as text that does not depend on how the row arrived: a CSV reads an
    empty op back as NaN and an int batch as 16.0 once a column holds a gap."""
    def text(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)
    return col.map(text)


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """The latest row of each measurement (by file order, then time stamp)."""
    if df.empty:
        return df
    key = [c for c in ROW_KEY if c in df]
    filled = pd.DataFrame({c: _key_text(df[c]) for c in key})
    return df[~filled.duplicated(keep="last")].reset_index(drop=True)


def append(path, rows: list[dict], replace_cells=()) -> pd.DataFrame:
    """Add rows to the results file, replacing earlier rows of the same measurement and
    every earlier row of ``replace_cells`` (a cell measured again from scratch)."""
    old = read(path)
    if len(replace_cells) and not old.empty:
        old = old[~old["cell"].astype(str).isin(set(replace_cells))]
    new = pd.DataFrame(rows)
    both = new if old.empty else pd.concat([old, new], ignore_index=True)
    both = ordered(dedupe(both))
    write_atomic(Path(path), both.to_csv(index=False))
    return both


def done_cells(df: pd.DataFrame) -> set[str]:
    if df.empty or "metric" not in df:
        return set()
    return set(df.loc[df["metric"] == "status", "cell"].astype(str))


def merge(paths, out) -> pd.DataFrame:
    """One store or CSV (``out`` ending in .csv) from several stores and CSV files
    (shards, runs on several machines, results from before the store); later inputs win
    where they measured the same thing."""
    frames = [read(p) for p in paths]
    frames = [f for f in frames if not f.empty]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    df = ordered(dedupe(df))
    if str(out).endswith(".csv"):
        write_atomic(Path(out), df.to_csv(index=False))
    else:
        from .store import Store
        Store(out).import_rows(df)
    return df
