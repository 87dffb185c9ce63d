"""Runs a matrix: every cell in a fresh subprocess with a timeout, rows appended to the
results file after each cell, cells already there skipped (resume), a progress bar with
the current cell and an ETA.

A cell that fails, crashes or times out becomes rows with its status and reason (and
whatever it measured before), and the run goes on.
"""

from __future__ import annotations

import contextlib
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
from .store import Store, file_key

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
    force: bool = False
    elsewhere: int = 0  # cells another driver on the same store held or stored


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def child_env(threads: int, cpus: tuple[int, ...] = ()) -> dict:
    env = dict(os.environ)
    env["FLOWBENCH_PARENT_PID"] = str(os.getpid())  # the worker ends when this process does
    if cpus:
        env["FLOWBENCH_CPUS"] = ",".join(map(str, cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "FLOWBENCH_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or Ctrl-C) stopped the run: its workers are ended, its claims released,
    and what was stored stays for a rerun to resume from."""

    def __init__(self, stored: int = 0, signum: int = signal.SIGINT):
        super().__init__(stored, signum)
        self.stored, self.signum = stored, signum


_LIVE: set = set()  # worker processes now running, ended together on an interrupt
_LIVE_LOCK = threading.Lock()
_STOP = threading.Event()  # set by an interrupt: no new worker starts
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def _end(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def end_workers() -> None:
    with _LIVE_LOCK:
        _STOP.set()
        for proc in list(_LIVE):
            _end(proc)


def _spawn(args: list[str], threads: int, timeout: float,
           cpus: tuple[int, ...] = ()) -> tuple[int | None, str]:
    """(exit code or None on timeout, stderr tail) of a worker subprocess; on timeout, or
    when this call is interrupted, the whole process group is killed, threads and children
    included (the worker also ends itself when this process dies: worker.watch_parent)."""
    if _STOP.is_set():
        raise Interrupted()
    proc = None
    try:
        with _interrupts_held():
            proc = subprocess.Popen([sys.executable, "-m", "flowbench.benchmarks.worker",
                                     *args], env=child_env(threads, cpus), cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
            with _LIVE_LOCK:
                _LIVE.add(proc)
                if _STOP.is_set():
                    _end(proc)
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, (err or "")[-2000:]
    except subprocess.TimeoutExpired:
        _end(proc)
        _, err = proc.communicate()
        return None, (err or "")[-2000:]
    except BaseException:
        if proc is not None:
            _end(proc)
            proc.wait()
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)


_HELD: list | None = None  # while the main thread starts a worker: interrupts wait here


@contextlib.contextmanager
def _interrupts_held():
    """Ctrl-C and SIGTERM wait while the main thread starts a worker: one raised inside
    ``Popen``, after the child exists and before it is known, would leave it running
    after the driver exits. Held ones are raised on leaving."""
    global _HELD
    if threading.current_thread() is not threading.main_thread() or _HELD is not None:
        yield
        return
    _HELD = []
    try:
        yield
    finally:
        held, _HELD = _HELD, None
        if held:
            raise Interrupted(signum=held[0])


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


def status_rows(cell: Cell, status: str, error: str) -> list[dict]:
    """The one status row of a cell that ran no worker (skipped, or lost by a cluster)."""
    return [{**_cell_fields(cell), "op": "", "metric": "status", "value": float("nan"),
             "unit": "", "statistic": "value", "status": status, "error": error}]


def skipped_rows(cell: Cell) -> list[dict]:
    return status_rows(cell, "skipped", cell.skip)


def calibration_rows(described: dict, run_id: str, env: dict | None = None) -> list[dict]:
    """Rows of a machine's calibration; ``env``: where it was measured (default here)."""
    cal = described["calibration"]
    base = {**(env or environment()), "cell": f"calibration-{run_id}", "kind": "calibration",
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


class _Writer:
    """The one writer of a run's rows into the store: a finished cell's rows go into its
    own file (cells may finish side by side), stamped with the run, and counted."""

    def __init__(self, store: Store, summary: RunSummary, matrix: str, console):
        self.store, self.summary, self.console = store, summary, console
        self.redo: set[str] = set()  # stored cells this run measures again
        self.stamp = {"run_id": summary.run_id, "matrix": matrix}
        self.described: dict = {}
        self.lock = threading.Lock()
        self.stopping = False  # set on an interrupt: cells ended by it are not results

    def stamped(self, rows: list[dict]) -> list[dict]:
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return [{**r, **self.stamp, "timestamp": now} for r in rows]

    def _stored(self, what: str, write) -> None:
        try:
            write()
        except OSError as exc:
            raise results.StoreError(
                f"could not store the rows of {what} in {self.store.path}: "
                f"{exc.strerror or exc}; the {self.summary.ran} cell(s) stored before are "
                "kept, and a rerun resumes from them") from exc

    def calibration(self, rows: list[dict], machine: str) -> None:
        self._stored("the calibration", lambda: self.store.put_calibration(
            self.summary.run_id, machine, self.stamped(rows)))

    def add(self, rows: list[dict], cell: Cell) -> None:
        if self.stopping:
            return
        self._stored(cell.name, lambda: self.store.put_cell(cell.key, self.stamped(rows)))
        status, err = next((r["status"], r["error"]) for r in rows
                           if r["metric"] == "status" and not r["op"])
        with self.lock:
            self.summary.statuses[status] = self.summary.statuses.get(status, 0) + 1
            self.summary.ran += 1
        if self.console is not None and status in ("failed", "timeout"):
            self.console.print(f"[red]{cell.name} {status}[/red]: {err[:300]}")
        if rows[0].get("loaded"):
            with self.lock:
                self.summary.loaded += 1
            if self.console is not None:
                self.console.print(f"[yellow]{cell.name}: measured under load[/yellow] "
                                   "(its GEMM check was below "
                                   f"{LOAD_RATIO:.0%} of the run's calibration)")

    def take(self, cell: Cell) -> bool:
        """Claim the cell for this run; False (and counted) where another driver holds
        it or stored it since this run listed its cells."""
        if not self.store.claim(cell.key, lease_s=cell.timeout + 600):
            with self.lock:
                self.summary.elsewhere += 1
            return False
        if self.store.cell_path(cell.key).exists() and file_key(cell.key) not in self.redo:
            self.store.release(cell.key)
            with self.lock:
                self.summary.elsewhere += 1
            return False
        return True

    def finish(self, cell: Cell, rows: list[dict] | None) -> None:
        """Store the cell's rows (None: it was ended by an interrupt) and release it."""
        try:
            if rows is not None:
                self.add(rows, cell)
        finally:
            self.store.release(cell.key)


def _describe(m: M.Matrix, writer: _Writer, console) -> dict:
    """Load and describe the matrix's backends and calibrate the machine; the calibration
    rows go into the store first."""
    threads = m.fields["threads"]
    if console is not None:
        console.print(f"[bold]{m.name}[/bold]: describing backends and calibrating "
                      f"({threads} threads) ...")
    described = describe_backends(threads, wanted_backends(m))
    writer.calibration(calibration_rows(described, writer.summary.run_id), machine())
    return described


def wanted_backends(m: M.Matrix) -> list[str]:
    return sorted({b for f in m.sweep_fields() for b in M.backend_names(f["backends"])})


def machine() -> str:
    return environment()["machine"]


def _todo(m: M.Matrix, described: dict, writer: _Writer, shard, force: bool,
          retry_failed: bool, console) -> list[Cell]:
    """The cells of this run (its shard) that the store does not hold yet (with
    ``retry_failed``, also those stored as failed or timed out)."""
    summary, store = writer.summary, writer.store
    cells = M.shard(M.expand(m, described["backends"]), shard)
    summary.cells = len(cells)
    done = set() if force else store.done_cells()
    if retry_failed and done:
        done -= {k for k, s in store.statuses().items() if s in ("failed", "timeout", "unreadable")}
    todo = [c for c in cells if file_key(c.key) not in done]
    writer.redo = {file_key(c.key) for c in todo} if (force or retry_failed) else set()
    summary.resumed = len(cells) - len(todo)
    if console is not None and summary.resumed:
        console.print(f"resuming: {summary.resumed} of {len(cells)} cells are already in "
                      f"{store.path} (--force measures them again, --retry-failed the "
                      "failed ones)")
    return todo


def _execute(todo: list[Cell], m: M.Matrix, writer: _Writer, console, progress: bool) -> None:
    """Each cell in its own worker subprocess, ``jobs`` at a time on disjoint CPUs;
    skipped cells become rows without a process. An interrupt ends every worker, stores
    nothing of the cells it cut short and releases their claims."""
    slots = cpu_slots(m.fields["jobs"], m.fields["threads"])
    free: queue.SimpleQueue = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)
    artifacts = str(writer.store.path.parent / "artifacts")
    quiet = writer.described["calibration"].get("load_check_gflops")
    with progress_bar(console, progress, len(todo)) as advance:

        def one(cell: Cell):
            cell = dataclasses.replace(cell, artifacts=artifacts, jobs=len(slots))
            if not writer.take(cell):
                return advance(None)
            rows = None
            try:
                if cell.skip:
                    rows = skipped_rows(cell)
                else:
                    slot = free.get()
                    try:
                        advance(cell, started=True)
                        rows = flag_load(run_cell(cell, cell.timeout, slot), quiet)
                    finally:
                        free.put(slot)
            finally:
                writer.finish(cell, None if writer.stopping else rows)
            advance(cell)

        try:
            if len(slots) == 1:
                for cell in todo:
                    one(cell)
            else:
                with ThreadPoolExecutor(len(slots)) as pool:
                    try:
                        list(pool.map(one, todo))
                    except KeyboardInterrupt:
                        writer.stopping = True
                        pool.shutdown(wait=False, cancel_futures=True)
                        end_workers()
                        raise
        except KeyboardInterrupt:
            writer.stopping = True
            end_workers()
            raise


@contextlib.contextmanager
def progress_bar(console, progress: bool, total: int):
    """``advance(cell, started=False)``: a cell started (its name shown) or finished."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True,
                  disable=not progress or console is None) as bar:
        task = bar.add_task("cells", total=total)

        def advance(cell, started: bool = False):
            if started:
                bar.update(task, description=f"cell {cell.name}")
            else:
                bar.advance(task)
        yield advance


@contextlib.contextmanager
def stop_on_interrupt():
    """SIGTERM and Ctrl-C become ``Interrupted`` in the main thread (a KeyboardInterrupt,
    whatever handler an imported library set): the run unwinds, ends its workers and
    releases its claims."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum, frame):
        if _HELD is not None:
            return _HELD.append(signum)
        raise Interrupted(signum=signum)

    old = {sig: signal.signal(sig, raise_interrupted) for sig in _INTERRUPTS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_matrix(m: M.Matrix, out: Path, *, shard: str | None = None, force: bool = False,
               retry_failed: bool = False, executor=None, console=None,
               progress: bool = True) -> RunSummary:
    """Describe and calibrate, find the cells still to measure, measure them (here, or
    on a Dask cluster when ``executor`` is one: see ``cluster``)."""
    summary = RunSummary(run_id=new_run_id(), path=Path(out), force=force)
    _STOP.clear()
    writer = _Writer(Store(out), summary, m.name, console)
    with stop_on_interrupt():
        try:
            if executor is None:
                summary.described = writer.described = _describe(m, writer, console)
                todo = _todo(m, summary.described, writer, shard, force, retry_failed,
                             console)
                _execute(todo, m, writer, console, progress)
            else:
                executor.run(m, writer, shard=shard, force=force, retry_failed=retry_failed,
                             progress=progress)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            raise Interrupted(stored=summary.ran, signum=signum) from None
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
