"""``--executor dask``: a matrix's cells as tasks on a Dask cluster that already exists
(a scheduler address), a ``distributed.LocalCluster`` started for the run (``--workers
N``), or SLURM/PBS jobs through dask-jobqueue. flowbench never schedules anything itself.

Each cell is one task that runs the same worker subprocess as the local executor on a Dask
worker (isolation, thread pinning and timeout kept) and returns its rows; the driver is the
only writer of the store. Every machine with a worker is described and calibrated once,
on that machine, and its rows carry its name: load flags compare a cell with its own
machine's calibration, and the report never puts two machines in one ratio.
"""

from __future__ import annotations

import dataclasses
import json

from . import matrix as M
from .cell import Cell

JOBQUEUES = ("slurm", "pbs")


class ClusterError(M.MatrixError):
    """A cluster that cannot be reached or built, and why."""


# --- tasks: run on the Dask worker ----------------------------------------------------
def describe_task(threads: int, backends: list[str]) -> tuple[dict, dict]:
    from .environment import describe as environment
    from .runner import describe_backends
    return describe_backends(threads, backends), environment()


def cell_task(cell_json: str, timeout: float, slots: list[tuple[int, ...]]) -> list[dict]:
    """The cell's rows, measured by a worker subprocess on this Dask worker; with
    ``slots`` (a LocalCluster's disjoint CPU sets) pinned to this worker's own."""
    from .runner import run_cell
    cpus: tuple[int, ...] = ()
    if slots:
        from distributed import get_worker
        name = get_worker().name
        cpus = tuple(slots[name % len(slots)]) if isinstance(name, int) else ()
    return run_cell(Cell.from_json(cell_json), timeout, cpus)


def _gpu(cell: Cell) -> bool:
    return cell.device in ("gpu", "cuda")


# --- the driver side -------------------------------------------------------------------
@dataclasses.dataclass
class DaskExecutor:
    """Where the cells go: ``scheduler`` (an address), ``workers`` (a LocalCluster of that
    many single-threaded worker processes), or ``jobqueue`` ("slurm"/"pbs") with
    ``options`` for dask-jobqueue (cores, memory, queue, walltime, jobs, gpus, ...).
    ``retries``: how many times a cell whose Dask worker died is started again."""

    scheduler: str | None = None
    workers: int | None = None
    jobqueue: str | None = None
    options: dict = dataclasses.field(default_factory=dict)
    retries: int = 2
    connect_timeout: float = 20.0

    def __post_init__(self):
        given = [x for x in (self.scheduler, self.workers, self.jobqueue) if x]
        if len(given) != 1:
            raise ClusterError("--executor dask needs exactly one of --scheduler ADDRESS, "
                               "--workers N (a LocalCluster here) or --jobqueue slurm|pbs")
        if self.jobqueue and self.jobqueue not in JOBQUEUES:
            raise ClusterError(f"unknown jobqueue {self.jobqueue!r}; known: {JOBQUEUES}")
        if self.workers is not None and self.workers < 1:
            raise ClusterError(f"--workers must be >= 1, not {self.workers}")

    def client(self):
        """(client, cluster we started or None); dask missing is a clear error."""
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ClusterError("--executor dask needs dask and distributed: pip install "
                               "'flowbench[cluster]'") from exc
        # a worker that dies mid-cell: the scheduler starts the cell again elsewhere
        # this many times, then gives it up as KilledWorker (our failed row)
        dask.config.set({"distributed.scheduler.allowed-failures": self.retries})
        if self.scheduler:
            try:
                return Client(self.scheduler, timeout=self.connect_timeout), None
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"cannot reach the Dask scheduler at {self.scheduler}: "
                                   f"{exc}") from None
        if self.workers:
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None,
                                   scheduler_port=0, silence_logs=40)
        else:
            cluster = jobqueue_cluster(self.jobqueue, self.options)
            cluster.scale(jobs=int(self.options.get("jobs", 1)))
        return Client(cluster), cluster

    def slots(self, m: M.Matrix) -> list[tuple[int, ...]]:
        """Disjoint CPU sets for a LocalCluster's workers where they fit; otherwise none
        (other machines' CPUs are unknown here; too few CPUs: cells share cores, and
        their load flags say so)."""
        from .runner import cpu_slots
        if not self.workers or self.workers == 1:
            return []
        try:
            return cpu_slots(self.workers, m.fields["threads"])
        except M.MatrixError:
            return []

    def run(self, m: M.Matrix, writer, *, shard, force: bool, retry_failed: bool,
            progress: bool) -> None:
        from distributed import as_completed

        from .runner import _todo, calibration_rows, flag_load, progress_bar, wanted_backends

        console = writer.console
        client, cluster = self.client()
        futures = {}
        try:
            client.wait_for_workers(1, timeout=600)
            hosts = _one_worker_per_host(client)
            if console is not None:
                console.print(f"[bold]{m.name}[/bold]: describing backends and calibrating "
                              f"on {len(hosts)} machine(s) through Dask ...")
            quiet, described = {}, None
            for address in hosts.values():
                d, env = client.submit(describe_task, m.fields["threads"], wanted_backends(m),
                                       workers=[address], pure=False).result()
                writer.calibration(calibration_rows(d, writer.summary.run_id, env),
                                   env["machine"])
                quiet[env["machine"]] = d["calibration"].get("load_check_gflops")
                described = described or d
            writer.summary.described = writer.described = described
            todo = _todo(m, described, writer, shard, force, retry_failed, console)
            artifacts = str(writer.store.path.parent / "artifacts")
            slots = self.slots(m)
            with progress_bar(console, progress, len(todo)) as advance:
                for cell in todo:
                    cell = dataclasses.replace(cell, artifacts=artifacts)
                    if not writer.take(cell):
                        advance(None)
                        continue
                    if cell.skip:
                        from .runner import skipped_rows
                        writer.finish(cell, skipped_rows(cell))
                        advance(cell)
                        continue
                    fut = client.submit(cell_task, cell.to_json(), cell.timeout, slots,
                                        key=f"cell-{writer.summary.run_id}-{cell.key}",
                                        resources={"GPU": 1} if _gpu(cell) else None,
                                        pure=False)
                    futures[fut] = cell
                for fut in as_completed(list(futures)):
                    cell = futures.pop(fut)
                    rows = _rows_of(fut, cell, self.retries)
                    machine = next((r.get("machine") for r in rows if r.get("machine")), "")
                    writer.finish(cell, flag_load(rows, quiet.get(machine)))
                    advance(cell)
        except KeyboardInterrupt:
            writer.stopping = True
            raise
        finally:
            for fut, cell in futures.items():  # interrupted: cancel, store nothing
                fut.cancel()
                writer.finish(cell, None)
            client.close()
            if cluster is not None:
                cluster.close()


def _one_worker_per_host(client) -> dict[str, str]:
    hosts: dict[str, str] = {}
    for address, info in sorted(client.scheduler_info(n_workers=-1)["workers"].items()):
        hosts.setdefault(info.get("host", address), address)
    return hosts


def _rows_of(fut, cell: Cell, retries: int) -> list[dict]:
    """The task's rows, or a failed status row saying why the cluster gave the cell up."""
    from distributed import KilledWorker

    from .runner import status_rows

    try:
        return fut.result()
    except KilledWorker as exc:
        error = (f"the Dask worker running it died {retries + 1} time(s) "
                 f"(retries={retries}): {exc}")
    except Exception as exc:  # the task itself raised: its message is the reason
        error = f"Dask task failed: {type(exc).__name__}: {exc}"
    return status_rows(cell, "failed", error)


def jobqueue_cluster(kind: str, options: dict):
    """A dask-jobqueue SLURMCluster or PBSCluster (not yet scaled: nothing is submitted).
    ``gpus``: per job, asked of the batch system and given to each worker as the Dask
    resource ``GPU`` that GPU cells ask for."""
    try:
        from dask_jobqueue import PBSCluster, SLURMCluster
    except ImportError as exc:
        raise ClusterError("--jobqueue needs dask-jobqueue: pip install "
                           "'flowbench[cluster]'") from exc
    opts = dict(options)
    opts.pop("jobs", None)
    gpus = int(opts.pop("gpus", 0) or 0)
    opts.setdefault("cores", 1)
    opts.setdefault("processes", 1)
    opts.setdefault("memory", "16GB")
    extra_args = list(opts.pop("worker_extra_args", []))
    directives = list(opts.pop("job_extra_directives", []))
    if gpus:
        extra_args += ["--resources", f"GPU={gpus}"]
        directives += [f"--gres=gpu:{gpus}"] if kind == "slurm" else []
        if kind == "pbs":
            opts.setdefault("resource_spec",
                            f"select=1:ncpus={opts['cores']}:ngpus={gpus}:mem={opts['memory']}")
    # a free port for the dashboard: 8787 is often taken on a shared login node
    opts.setdefault("scheduler_options", {"dashboard_address": ":0"})
    cls = SLURMCluster if kind == "slurm" else PBSCluster
    return cls(worker_extra_args=extra_args, job_extra_directives=directives, **opts)


def options_from(pairs: list[str] | None, table: dict | None = None) -> dict:
    """dask-jobqueue options from the matrix file's [cluster] table and KEY=VALUE flags
    (flags win); values are read as JSON where they parse (numbers, lists), else text."""
    opts = dict(table or {})
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClusterError(f"--cluster-option wants KEY=VALUE, not {pair!r}")
        try:
            opts[key] = json.loads(value)
        except ValueError:
            opts[key] = value
    return opts
