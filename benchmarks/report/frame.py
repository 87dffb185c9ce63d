"""The report's rows: results files read into one frame, and the labels that keep every
measured spec and device apart in a table (no two specs ever share a table cell)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from flowbench import adapters

from ..results import COLUMNS, read
from ..store import is_store


TIDY = {"metric", "status", "cell", "value"}


framework = adapters.framework


def load_results(results_dir: Path) -> pd.DataFrame:
    """Every results store (a folder with a STORE file) and tidy results CSV of a folder
    (or the one store or file given) as one frame with every column of
    ``results.COLUMNS`` (a file in which nothing was measured lacks some), the source's
    name in ``file`` and the table column label in ``column``. Files that cannot be read
    are listed in ``df.attrs["unreadable"]`` with the reason, and left out whole."""
    results_dir = Path(results_dir)
    if results_dir.is_file() or is_store(results_dir):
        paths = [results_dir]
    else:
        stores = [p for p in results_dir.iterdir() if is_store(p)] \
            if results_dir.is_dir() else []
        # NAME.csv beside the store NAME is its export (`flowbench export`): read once
        exports = {p.with_suffix(".csv") for p in stores}
        paths = sorted([*(p for p in results_dir.glob("*.csv")
                          if p.is_file() and p not in exports),
                        *stores])
    frames, unreadable = [], []
    for path in paths:
        try:
            df = read(path, problems=unreadable)
        except (OSError, ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError too
            unreadable.append(f"{path}: {type(exc).__name__}: {str(exc).strip()[:200]}")
            continue
        if df.empty or not TIDY <= set(df.columns):
            continue  # passes.csv, compile_time.csv: tables of their own commands
        if "matrix" not in df:
            df["matrix"] = re.sub(r"\.shard-.*$", "", path.stem)
        df["file"] = path.name
        frames.append(df)
    if not frames:
        empty = pd.DataFrame()
        empty.attrs["unreadable"] = unreadable
        return empty
    df = pd.concat(frames, ignore_index=True)
    df = df.reindex(columns=list(dict.fromkeys([*COLUMNS, *df.columns])))
    variant = df["variant"].astype(object).where(df["variant"].notna(), "")
    df["column"] = np.where(variant.astype(str).isin(["", "eager", "jit"]),
                            df["backend"].astype(str),
                            df["backend"].astype(str) + "/" + df["variant"].astype(str))
    df.attrs["unreadable"] = unreadable
    return df


def _md(df: pd.DataFrame, floatfmt=".3g") -> str:
    return df.to_markdown(floatfmt=floatfmt) if len(df) else "(no rows)"


def _ok(df, metric, statistic=None):
    sel = (df["metric"] == metric) & (df["status"] == "ok")
    if statistic:
        sel &= df["statistic"] == statistic
    return df[sel]


def _pivot(rows: pd.DataFrame, aggfunc="last") -> pd.DataFrame:
    return rows.pivot_table(index="arch", columns="column", values="value", aggfunc=aggfunc)


SPEC_FIELDS = ["transform", "conditioner", "direction", "dim", "layers", "hidden", "bins"]


def _text(values: pd.Series) -> pd.Series:
    """Spec values as label text: 5.0 -> "5", missing -> "?"."""
    def one(v):
        if pd.isna(v):
            return "?"
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)
    return values.map(one).astype(object)


def _measured(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of what ran: what a table's labels have to tell apart (a skipped GPU
    cell or depth is in the problems table, not a label)."""
    return df[df["status"] == "ok"] if "status" in df else df


def _label(rows: pd.DataFrame, keyed=(), columns=("column",), context=None) -> pd.DataFrame:
    """The rows with table labels that keep every measured spec and device apart.

    ``arch`` gets a suffix for each spec field (``SPEC_FIELDS``, less those in ``keyed``,
    which the table keys on itself) that takes several values among that arch's rows in
    ``context`` (default: ``rows``; tables pass every measured row of their results, so
    a label means the same in each of them): layers and hidden as "maf 5x(128,128)", then
    "bins 8", "dim 16", and transform, conditioner or direction by value; an arch
    measured at one spec keeps its plain name. Each of ``columns`` (backend labels) gets
    "@device" when the context spans several devices."""
    if rows.empty:
        return rows
    ctx = rows if context is None else context
    out = {}
    if "arch" in rows and "arch" in ctx:
        fields = [f for f in SPEC_FIELDS if f in rows and f in ctx and f not in keyed]
        arch = rows["arch"].astype(object)
        many = (ctx[fields].groupby(ctx["arch"].astype(object)).nunique() > 1
                if fields else pd.DataFrame())

        def varies(*names):
            hit = pd.Series(False, index=rows.index)
            for f in names:
                if f in many:
                    hit |= arch.map(many[f]).eq(True)
            return hit

        label = arch.astype(str)
        for f in ("transform", "conditioner", "direction"):
            if f in fields:
                label = label.where(~varies(f), label + " " + _text(rows[f]))
        if "layers" in fields or "hidden" in fields:
            depth = (_text(rows["layers"]) if "layers" in rows else "?") + "x"
            if "hidden" in rows:
                depth = depth + "(" + _text(rows["hidden"]).str.replace("x", ",") + ")"
            label = label.where(~varies("layers", "hidden"), label + " " + depth)
        for f in ("bins", "dim"):
            if f in fields:
                label = label.where(~varies(f), label + f" {f} " + _text(rows[f]))
        out["arch"] = label.where(arch.notna(), arch)
    if "device" in rows and "device" in ctx and ctx["device"].nunique() > 1:
        where = "@" + _text(rows["device"])
        out.update({c: rows[c].astype(str) + where for c in columns if c in rows})
    return rows.assign(**out)
