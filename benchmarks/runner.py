"""Runs a matrix: every cell in a fresh subprocess with a timeout, rows appended to the
results file after each cell, cells already there skipped (resume), a progress bar with
the current cell and an ETA.

A cell that fails, crashes or times out becomes rows with its status and reason (and
whatever it measured before), and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import matrix as M
from . import results
from .cell import Cell
from .flops import LOAD_RATIO
from .environment import describe as environment

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunSummary:
    run_id: str
    path: Path
    cells: int = 0
    ran: int = 0
    resumed: int = 0
    statuses: dict = field(default_factory=dict)
    loaded: int = 0
    described: dict = field(default_factory=dict)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def child_env(threads: int, cpus: tuple[int, ...] = ()) -> dict:
    env = dict(os.environ)
    if cpus:
        env["FLOWBENCH_CPUS"] = ",".join(map(str, cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "FLOWBENCH_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _spawn(args: list[str], threads: int, timeout: float,
           cpus: tuple[int, ...] = ()) -> tuple[int | None, str]:
    """(exit code or None on timeout, stderr tail) of a worker subprocess; on timeout the
    whole process group is killed, threads and children included."""
    proc = subprocess.Popen([sys.executable, "-m", "flowbench.benchmarks.worker", *args],
                            env=child_env(threads, cpus), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, (err or "")[-2000:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, (err or "")[-2000:]


def describe_backends(threads: int, names=(), timeout: float = 900) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "describe.json"
        rc, err = _spawn(["describe", str(out), str(threads), *names], threads, timeout)
        if rc != 0 or not out.exists():
            raise RuntimeError(f"describing the backends failed (exit {rc}): {err}")
        return json.loads(out.read_text())


def run_cell(cell: Cell, timeout: float, cpus: tuple[int, ...] = ()) -> list[dict]:
    """The cell's rows; a timeout or crash adds a status row saying so."""
    with tempfile.TemporaryDirectory() as tmp:
        cell_file, rows_file = Path(tmp) / "cell.json", Path(tmp) / "rows.jsonl"
        cell_file.write_text(cell.to_json())
        t0 = time.perf_counter()
        rc, err = _spawn(["cell", str(cell_file), str(rows_file)], cell.threads, timeout,
                         cpus)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()
                if line.strip()] if rows_file.exists() else []
    if any(r["metric"] == "status" and not r["op"] for r in rows):
        return rows
    base = rows[0] if rows else _cell_fields(cell)
    base = {k: v for k, v in base.items() if k not in ("op", "metric", "value", "unit",
                                                        "statistic", "error", "status")}
    if rc is None:
        status, error = "timeout", f"timed out after {timeout:g} s"
    else:
        status, error = "failed", f"worker exited with code {rc}" + (
            f" (signal {-rc})" if rc < 0 else "") + f": {err.strip()[-600:]}"
    rows.append({**base, "op": "", "metric": "status", "value": float("nan"), "unit": "",
                 "statistic": "value", "status": status, "error": error, "wall_s": wall})
    return rows


def _cell_fields(cell: Cell) -> dict:
    keep = ("backend", "variant", "arch", "device", "seed", "threads", "layers", "bins",
            "tail_bound", "dim", "dataset", "kind")
    return {**{k: getattr(cell, k) for k in keep}, "hidden": "x".join(map(str, cell.hidden)),
            "cell": cell.key, **environment()}


def skipped_rows(cell: Cell) -> list[dict]:
    return [{**_cell_fields(cell), "op": "", "metric": "status", "value": float("nan"),
             "unit": "", "statistic": "value", "status": "skipped", "error": cell.skip}]


def calibration_rows(described: dict, run_id: str) -> list[dict]:
    cal = described["calibration"]
    base = {**environment(), "cell": f"calibration-{run_id}", "kind": "calibration",
            "threads": cal["threads"], "status": "ok", "error": "", "op": "",
            "statistic": "value"}
    rows = [{**base, "metric": "timer_overhead", "value": cal["timer_overhead_s"],
             "unit": "s", "statistic": "median"},
            {**base, "metric": "load_check", "value": cal["load_check_gflops"],
             "unit": "GFLOP/s", "statistic": "max"},
            {**base, "metric": "load_avg_1m", "value": cal["load_avg_1m"], "unit": "load"},
            {**base, "metric": "gemm_peak", "value": cal["gemm_peak_gflops"],
             "unit": "GFLOP/s", "statistic": "max", "source": "numpy"},
            {**base, "metric": "mem_bandwidth", "value": cal["mem_bandwidth_gbs"],
             "unit": "GB/s", "statistic": "max", "source": "numpy copy"}]
    rows += [{**base, "metric": "gemm_peak", "value": v, "unit": "GFLOP/s",
              "statistic": "max", "source": fw} for fw, v in cal["framework_peaks"].items()]
    for name, b in described["backends"].items():
        rows.append({**base, "metric": "backend", "backend": name, "value": float("nan"),
                     "unit": "", "backend_version": b["version"],
                     "status": "ok" if b["reason"] is None else "unavailable",
                     "error": b["reason"] or "", "variant": ",".join(b["variants"])})
    return rows


def flag_load(rows: list[dict], quiet: float | None) -> list[dict]:
    """Rows of one cell with ``loaded`` set on each (and a ``load_ratio`` row): the
    cell's slower GEMM check over ``quiet``, the run's calibration of the same check.
    Below ``LOAD_RATIO`` the cell shared its CPUs with other work while it was timed."""
    checks = [r["value"] for r in rows if r["metric"] == "load_check" and r["status"] == "ok"]
    if not checks or not quiet:
        return rows
    ratio = min(checks) / quiet
    loaded = ratio < LOAD_RATIO
    status = next((r for r in rows if r["metric"] == "status" and not r["op"]), rows[-1])
    ratio_row = {**status, "op": "", "metric": "load_ratio", "value": ratio, "unit": "ratio",
                 "statistic": "min", "status": "ok", "error": ""}
    return [{**r, "loaded": loaded} for r in rows[:-1] + [ratio_row, rows[-1]]]


class _Store:
    """The one writer of a run's results file: rows of a finished cell are appended under
    a lock (cells may finish side by side), stamped with the run, and counted."""

    def __init__(self, out: Path, summary: RunSummary, matrix: str, force: bool, console):
        self.out, self.summary, self.force, self.console = out, summary, force, console
        self.stamp = {"run_id": summary.run_id, "matrix": matrix}
        self.described: dict = {}
        self.lock = threading.Lock()

    def stamped(self, rows: list[dict]) -> list[dict]:
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return [{**r, **self.stamp, "timestamp": now} for r in rows]

    def add(self, rows: list[dict], cell: Cell | None = None) -> None:
        with self.lock:
            replace = [cell.key] if cell is not None and self.force else ()
            try:
                results.append(self.out, self.stamped(rows), replace_cells=replace)
            except OSError as exc:
                stored = self.summary.ran
                raise results.StoreError(
                    f"could not store the rows of {cell.name if cell else 'the calibration'} "
                    f"in {self.out}: {exc.strerror or exc}; the {stored} cell(s) stored "
                    "before are kept, and a rerun resumes from them") from exc
            if cell is None:
                return
            status, err = next((r["status"], r["error"]) for r in rows
                               if r["metric"] == "status" and not r["op"])
            self.summary.statuses[status] = self.summary.statuses.get(status, 0) + 1
            self.summary.ran += 1
            if self.console is not None and status in ("failed", "timeout"):
                self.console.print(f"[red]{cell.name} {status}[/red]: {err[:300]}")
            if rows[0].get("loaded"):
                self.summary.loaded += 1
                if self.console is not None:
                    self.console.print(f"[yellow]{cell.name}: measured under load[/yellow] "
                                       "(its GEMM check was below "
                                       f"{LOAD_RATIO:.0%} of the run's calibration)")


def _describe(m: M.Matrix, store: _Store, console) -> dict:
    """Load and describe the matrix's backends and calibrate the machine; the calibration
    rows go into the results first."""
    threads = m.fields["threads"]
    if console is not None:
        console.print(f"[bold]{m.name}[/bold]: describing backends and calibrating "
                      f"({threads} threads) ...")
    wanted = sorted({b for f in m.sweep_fields() for b in M.backend_names(f["backends"])})
    described = describe_backends(threads, wanted)
    store.add(calibration_rows(described, store.summary.run_id))
    return described


def _todo(m: M.Matrix, described: dict, out: Path, shard, force: bool,
          summary: RunSummary, console) -> list[Cell]:
    """The cells of this run (its shard) that the results file does not hold yet."""
    cells = M.shard(M.expand(m, described["backends"]), shard)
    summary.cells = len(cells)
    done = set() if force else results.done_cells(results.read(out))
    todo = [c for c in cells if c.key not in done]
    summary.resumed = len(cells) - len(todo)
    if console is not None and summary.resumed:
        console.print(f"resuming: {summary.resumed} of {len(cells)} cells are already in "
                      f"{out} (--force measures them again)")
    return todo


def _execute(todo: list[Cell], m: M.Matrix, store: _Store, console, progress: bool) -> None:
    """Each cell in its own worker subprocess, ``jobs`` at a time on disjoint CPUs;
    skipped cells become rows without a process."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    slots = cpu_slots(m.fields["jobs"], m.fields["threads"])
    free: queue.SimpleQueue = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)
    artifacts = str(Path(store.out).parent / "artifacts")
    quiet = store.described["calibration"].get("load_check_gflops")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True,
                  disable=not progress or console is None) as bar:
        task = bar.add_task("cells", total=len(todo))

        def one(cell: Cell):
            cell = dataclasses.replace(cell, artifacts=artifacts, jobs=len(slots))
            if cell.skip:
                rows = skipped_rows(cell)
            else:
                slot = free.get()
                try:
                    bar.update(task, description=f"cell {cell.name}")
                    rows = flag_load(run_cell(cell, cell.timeout, slot), quiet)
                finally:
                    free.put(slot)
            store.add(rows, cell)
            bar.advance(task)

        if len(slots) == 1:
            for cell in todo:
                one(cell)
        else:
            with ThreadPoolExecutor(len(slots)) as pool:
                list(pool.map(one, todo))


def run_matrix(m: M.Matrix, out: Path, *, shard: str | None = None, force: bool = False,
               console=None, progress: bool = True) -> RunSummary:
    """Describe and calibrate, find the cells still to measure, measure them."""
    summary = RunSummary(run_id=new_run_id(), path=Path(out))
    store = _Store(Path(out), summary, m.name, force, console)
    summary.described = store.described = _describe(m, store, console)
    todo = _todo(m, summary.described, Path(out), shard, force, summary, console)
    _execute(todo, m, store, console, progress)
    return summary


def cpu_slots(jobs: int, threads: int) -> list[tuple[int, ...]]:
    """Disjoint CPU sets of ``threads`` CPUs, one per concurrent cell: side-by-side cells
    never share a core (a slot of () means one cell at a time, pinned as before)."""
    if jobs <= 1:
        return [()]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if jobs * threads > len(cpus):
        raise M.MatrixError(f"jobs={jobs} x threads={threads} needs {jobs * threads} CPUs; "
                            f"this process may use {len(cpus)}")
    return [tuple(cpus[i * threads:(i + 1) * threads]) for i in range(jobs)]
