"""Reading results, wherever they are (a results store, see ``store``, or a tidy CSV:
an export, or a file from before the store), and merging them into one store or CSV.

One row is one measurement (see ``tidy.COLUMNS`` for the fields every row carries); a later
row with the same ``ROW_KEY`` replaces an earlier one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .store import Store
from .tidy import COLUMNS, ordered, write_atomic

# one measurement: a later row with the same key replaces an earlier one (--force, merge)
ROW_KEY = ["cell", "backend", "op", "metric", "statistic", "batch", "step", "source"]


class StoreError(OSError):
    """Rows that could not be stored (disk full, the folder gone); what was stored before
    stays, and a rerun resumes from it."""


def read(path, problems: list | None = None) -> pd.DataFrame:
    """The rows of a results store (a folder) or a results CSV. A store's unreadable
    files are appended to ``problems`` (name and reason) and left out."""
    path = Path(path)
    if path.is_dir():
        store = Store(path, create=False)
        df = store.read()
        if problems is not None:
            problems.extend(store.problems)
        return df
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path, low_memory=False)


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
        Store(out).import_rows(df)
    return df
