"""The results store: a folder per matrix, one Parquet file per finished cell.

    STORE                         marks the folder (and its layout version)
    cells/<cell key>.parquet      every row of one cell; it exists once the cell is done
    calibration/<run>-<machine>.parquet
    claims/<cell key>.claim       who is measuring the cell now (host, pid, start time)

Each file is written whole to a temporary name and renamed (readers see all of it or none),
so finishing a cell costs the same with ten cells stored or ten thousand. A driver measures
a cell only while it holds the cell's claim, made with ``O_EXCL``: two drivers on one store
never measure the same cell at once, and a claim whose owner is gone (a dead pid on this
host, or older than its lease elsewhere) is taken over.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .tidy import COLUMNS, ordered, temporary_prefix, writable_mode, write_atomic

MARK = "STORE"
LAYOUT = "flowbench-store 1"

TEXT = ["run_id", "timestamp", "git_commit", "machine", "device", "backend",
        "backend_version", "variant", "kind", "arch", "transform", "conditioner",
        "direction", "hidden", "dataset", "op", "metric", "unit", "statistic", "status",
        "error", "cell", "source", "counter", "note", "matrix", "platform", "python",
        "cpu", "malloc"]
INTEGER = ["dim", "layers", "bins", "batch", "repeats", "threads", "seed", "step"]
FLOAT = ["value", "passes"]


class StoreReadError(Exception):
    """One file of a store that could not be read; the rest are read."""


def file_key(key: str) -> str:
    """A cell key as a file name (keys are made of spec fields; ``/`` would nest)."""
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", key)


def _blank(v) -> bool:
    return v is None or v == "" or (isinstance(v, float) and v != v)


def is_store(path) -> bool:
    return (Path(path) / MARK).is_file()


def _column(values: pd.Series, name: str) -> pa.Array:
    """One column with the type the store gives it, whatever the rows carried: text for
    labels, nullable int64 for counts and sizes, float64 for measurements; a column the
    store does not know keeps its own type when Arrow can hold it, text otherwise."""
    missing = values.isna()
    if name in TEXT:
        return pa.array([None if m else str(v) for v, m in zip(values, missing)], pa.string())
    if name in INTEGER or name in FLOAT:
        numbers = pd.to_numeric(values, errors="coerce")
        if name in INTEGER and (numbers.dropna() % 1 == 0).all():
            return pa.array(numbers.astype("Int64"), pa.int64(), from_pandas=True)
        return pa.array(numbers.astype(float), pa.float64(), from_pandas=True)
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if m else str(v) for v, m in zip(values, missing)], pa.string())


def to_table(rows) -> pa.Table:
    df = ordered(pd.DataFrame(rows))
    return pa.table({c: _column(df[c], c) for c in df.columns})


@dataclass
class Claim:
    host: str
    pid: int
    started: float  # the owner's process start (pid reuse) or, elsewhere, the claim time
    expires: float
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


def _process_start(pid: int) -> float:
    """Start time of a process in clock ticks since boot (0 where /proc is not there)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return float(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0.0


def _alive(claim: Claim) -> bool:
    if claim.host != socket.gethostname():
        return time.time() < claim.expires
    try:
        os.kill(claim.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_start(claim.pid) == claim.started


def _making_mark(f: Path) -> bool:
    """The temporary file of a mark another driver is writing now: two drivers started
    together on a new store both create it, and neither may take the other for a squatter."""
    return f.name.startswith(temporary_prefix(MARK))


class Store:
    """A results store folder (made on first use when ``create``)."""

    def __init__(self, path, create: bool = True):
        self.path = Path(path)
        if not is_store(self.path):
            if not create:
                raise FileNotFoundError(f"{self.path} is not a flowbench results store "
                                        f"(no {MARK} file)")
            if self.path.exists() and any(not _making_mark(f) for f in self.path.iterdir()):
                raise FileExistsError(f"{self.path} holds files but no {MARK} file: not a "
                                      "results store; choose another --out")
            write_atomic(self.path / MARK, LAYOUT + "\n")
        for sub in ("cells", "calibration", "claims"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self.problems: list[str] = []
        self.unreadable: set[str] = set()  # file keys of cell files that did not read

    # --- writing ---------------------------------------------------------------------
    def cell_path(self, key: str) -> Path:
        return self.path / "cells" / f"{file_key(key)}.parquet"

    def _write(self, path: Path, rows) -> None:
        table = to_table(rows)
        tmp = path.with_name(temporary_prefix(path.name) + uuid.uuid4().hex[:8])
        try:
            pq.write_table(table, tmp)
            os.chmod(tmp, writable_mode())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_cell(self, key: str, rows: list[dict]) -> None:
        """Store a finished cell's rows (replacing what the cell held): they must hold its
        status row, the mark of a done cell."""
        if not any(r.get("metric") == "status" and _blank(r.get("op")) for r in rows):
            raise ValueError(f"cell {key}: rows without a status row are not a finished cell")
        self._write(self.cell_path(key), rows)

    def put_calibration(self, run_id: str, machine: str, rows: list[dict]) -> None:
        self._write(self.path / "calibration" / f"{file_key(f'{run_id}-{machine}')}"
                    ".parquet", rows)

    def import_rows(self, df: pd.DataFrame) -> int:
        """Rows from elsewhere (a CSV from before the store, another store): each cell
        with its status row becomes a cell file, calibration rows a file per run and
        machine; rows of a cell without a status row (never finished) are left out.
        Returns the number of cells stored."""
        if df.empty:
            return 0
        df = df.reindex(columns=list(dict.fromkeys([*df.columns, "kind", "run_id",
                                                    "machine", "cell", "metric"])))
        calibration = df["kind"].astype(str) == "calibration"
        for (run, machine), g in df[calibration].groupby(
                [df["run_id"].fillna("imported"), df["machine"].fillna("unknown")]):
            self.put_calibration(str(run), str(machine), g.to_dict("records"))
        stored = 0
        for key, g in df[~calibration].groupby(df["cell"].astype(str)):
            if (g["metric"] == "status").any():
                self.put_cell(key, g.to_dict("records"))
                stored += 1
        return stored

    # --- claims ----------------------------------------------------------------------
    def _claim_path(self, key: str) -> Path:
        return self.path / "claims" / f"{file_key(key)}.claim"

    def claim(self, key: str, lease_s: float) -> bool:
        """Take the cell for this process; False while a live owner holds it. A claim
        left by a dead owner is taken over (renamed away first, so two drivers that
        find it stale at once do not both take it)."""
        path = self._claim_path(key)
        pid = os.getpid()
        mine = Claim(socket.gethostname(), pid, _process_start(pid), time.time() + lease_s)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                held = self._read_claim(path)
                if held is not None and _alive(held):
                    return False
                stale = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
                try:
                    os.rename(path, stale)
                    stale.unlink()
                except FileNotFoundError:
                    pass  # released meanwhile, or another driver moved it first
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(mine.__dict__, f)
            return True
        return False

    @staticmethod
    def _read_claim(path: Path) -> Claim | None:
        try:
            return Claim(**json.loads(path.read_text()))
        except FileNotFoundError:
            return Claim("", 0, 0.0, float("inf"))  # gone meanwhile: try again
        except (OSError, ValueError, TypeError):
            # half-written by an owner between open and write: fresh, so held
            age = time.time() - path.stat().st_mtime if path.exists() else 1e9
            return Claim("", 0, 0.0, float("inf")) if age < 60 else None

    def release(self, key: str) -> None:
        path = self._claim_path(key)
        held = self._read_claim(path) if path.exists() else None
        if held is not None and held.pid == os.getpid() and held.host == socket.gethostname():
            path.unlink(missing_ok=True)

    # --- reading ---------------------------------------------------------------------
    def done_cells(self) -> set[str]:
        """``file_key`` of every stored cell (a cell file is only ever written with its
        status row, so its name alone says the cell is done)."""
        return {path.stem for path in (self.path / "cells").glob("*.parquet")}

    def _files(self):
        yield from sorted((self.path / "calibration").glob("*.parquet"))
        yield from sorted((self.path / "cells").glob("*.parquet"))

    def read(self, columns=None, metric=None) -> pd.DataFrame:
        """Every row of the store; files that cannot be read are named in ``problems``
        with the reason and left out whole (never half-read)."""
        tables, self.problems, self.unreadable = [], [], set()
        for path in self._files():
            try:
                t = pq.read_table(path)
            except (OSError, pa.ArrowException) as exc:
                self.problems.append(f"{path}: {type(exc).__name__}: {exc}")
                if path.parent.name == "cells":
                    self.unreadable.add(path.stem)
                continue
            if metric is not None:
                t = t.filter(pc.equal(t["metric"], metric))
            if columns is not None:
                t = t.select([c for c in columns if c in t.column_names])
            tables.append(t)
        if not tables:
            return pd.DataFrame(columns=COLUMNS)
        df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        # as a CSV reads back: a missing or empty text is NaN, whichever way it was stored
        return ordered(df.replace({None: np.nan, "": np.nan}))

    def statuses(self) -> dict[str, str]:
        """``file_key`` -> status of each stored cell ("unreadable" for a damaged file:
        --retry-failed measures it again)."""
        df = self.read(columns=["cell", "op", "status", "metric"], metric="status")
        df = df[df["op"].fillna("") == ""]
        return {**dict(zip(df["cell"].map(file_key), df["status"])),
                **{k: "unreadable" for k in self.unreadable}}
