"""One cell in a fresh process: ``python -m flowbench.benchmarks.worker cell CELL.json ROWS.jsonl``.

The runner starts this with the thread settings already in the environment, so every
framework starts with them. Each row is appended to ROWS.jsonl and flushed as soon as it
is measured: when the cell times out or crashes, what it measured is kept.

``python -m flowbench.benchmarks.worker describe OUT.json THREADS [BACKEND ...]`` loads the backends
(default: every registered one) once and
writes what the runner needs to expand a matrix (versions, execution variants, the arch
presets a peer lacks and why), the conventions table, plus the run's calibration: the
timing loop's own overhead per call and the machine's float32 GEMM peak.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
import traceback

import numpy as np

from . import environment
from .cell import Cell
from .timing import measure, op_calls

# what a backend declares it cannot do (or a spec that cannot exist, like coupling on a
# 1-D dataset): a skipped cell, not a failure
SKIP_ERRORS = ("BackendUnavailable", "UnsupportedSpec", "DeviceError", "UnsupportedOp",
               "SpecError")


class Rows:
    """Appends tidy rows to a JSON-lines file, flushed one by one."""

    def __init__(self, path: str, base: dict):
        self.f = open(path, "a")
        self.base = base

    def add(self, metric: str, value, unit: str, op: str = "", statistic: str = "value",
            **more):
        row = {**self.base, "op": op, "metric": metric, "value": _num(value), "unit": unit,
               "statistic": statistic, "status": "ok", "error": "", **more}
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()

    def status(self, status: str, error: str, op: str = "", **more):
        row = {**self.base, "op": op, "metric": "status", "value": float("nan"), "unit": "",
               "statistic": "value", "status": status, "error": error, **more}
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()


def _num(v):
    return float(v) if v is not None else float("nan")


def _status_of(exc: BaseException) -> str:
    return "skipped" if type(exc).__name__ in SKIP_ERRORS else "failed"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def spec_of(cell: Cell, dim: int):
    from flowbench import adapters
    return adapters.FlowSpec(arch=cell.arch, dim=dim, layers=cell.layers,
                             hidden=tuple(cell.hidden), bins=cell.bins,
                             tail_bound=cell.tail_bound)


def time_ops(flow, backend, rows: Rows, cell: Cell, data=None, target=None) -> None:
    """Every op of the cell at every batch size; a failing op is a row, the rest go on."""
    from .flops import flops_per_pass, op_flops

    rng = np.random.default_rng(cell.seed)
    for batch in cell.batches:
        if data is None:
            x = rng.standard_normal((batch, flow.spec.dim)).astype(np.float32)
        else:
            x = data[rng.integers(0, len(data), batch)]
        calls = op_calls(flow, backend.to_native(x, flow.device), seed=cell.seed + 1,
                         target=target)
        for op in cell.ops:
            more = {"batch": batch}
            try:
                t = measure(calls[op], backend.block, min_repeats=cell.min_repeats,
                            min_time=cell.min_time, max_time=cell.max_time)
            except Exception as exc:  # one op failing (or not offered) is a row
                rows.status(_status_of(exc), _error(exc), op=op, **more)
                continue
            passes = flow.passes
            more.update(repeats=t["repeats"], passes=passes)
            rows.add("time", t["median"], "s", op, "median", **more)
            rows.add("time", t["iqr"], "s", op, "iqr", **more)
            rows.add("time", t["min"], "s", op, "min", **more)
            rows.add("first_call", t["first"], "s", op, "value", **more)
            rows.add("compile", max(t["first"] - t["median"], 0.0), "s", op, "value", **more)
            rows.add("passes", passes, "count", op, "value", **more)
            rows.add("throughput", batch / t["median"], "samples/s", op, "median", **more)
            if not flops_per_pass(flow.spec):  # no conditioner network (planar,
                continue                        # radial): no conditioner FLOPs to count
            analytic = op_flops(flow.spec, op, passes, batch)
            work = executed_work(flow, calls[op], analytic)
            rows.add("analytic_flops", analytic, "FLOP", op, "value", **more)
            rows.add("executed_flops", work.flops, "FLOP", op, "value", counter=work.counter,
                     note=work.note, **more)
            # executed work in conditioner passes: where it differs from ``passes`` the
            # compiler removed or the library added network evaluations
            rows.add("executed_passes", work.flops / op_flops(flow.spec, op, 1, batch),
                     "count", op, "value", counter=work.counter, **more)
            flops = work.flops if work.counter != "none" else analytic
            rows.add("gflops", flops / t["median"] / 1e9, "GFLOP/s", op, "median",
                     counter=work.counter if work.counter != "none" else "analytic", **more)


def executed_work(flow, run, analytic: float):
    """The flow's executed work for one call of run; a counter that fails or is missing
    gives counter 'none' and says why, and GFLOP/s falls back to the analytic count."""
    from flowbench.adapters.work import Work
    try:
        work = flow.executed(run, analytic)
    except Exception as exc:  # a counter failing must not lose the timing
        return Work(float("nan"), "none", f"counter failed: {_error(exc)[:300]}")
    return work if work is not None else Work(float("nan"), "none",
                                              "this backend has no framework counter")


def peak_device_memory(backend, device: str):
    """The framework's own peak of device memory, bytes; None on CPU."""
    if not device.startswith(("cuda", "gpu")):
        return None
    fw = backend.framework
    if fw == "torch":
        import torch
        return torch.cuda.max_memory_allocated()
    if fw == "jax":
        import jax
        stats = jax.devices("gpu")[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")
    if fw == "tensorflow":
        import tensorflow as tf
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return None


def check_load(rows: Rows, when: str) -> None:
    """The 1-minute load average and the short GEMM check, at the cell's start and end:
    the runner compares the check with the run's calibration (``flops.LOAD_RATIO``)."""
    from .flops import load_check

    rows.add("load_avg_1m", os.getloadavg()[0], "load", statistic=when)
    rows.add("load_check", load_check(), "GFLOP/s", statistic=when)


def _dataset_dim(cell: Cell) -> int:
    from flowbench import datasets
    return datasets.density(cell.dataset).dim


def run_cell(cell: Cell, out: str) -> int:
    from flowbench import adapters
    from flowbench.adapters.image import ImageSpec
    from flowbench.datasets.images import IMAGE_NAMES, load_images

    base = {k: getattr(cell, k) for k in ("backend", "variant", "arch", "device", "seed", "threads",
                                 "layers", "bins", "tail_bound")}
    base.update(cell=cell.key, kind=cell.kind, hidden="x".join(map(str, cell.hidden)),
                dim=cell.dim, dataset=cell.dataset or "", jobs=cell.jobs,
                **environment.describe())
    rows = Rows(out, base)
    t0 = time.perf_counter()
    check_load(rows, "start")
    device = "cuda" if cell.device == "gpu" else cell.device
    try:
        if cell.kind == "paired":
            from .paired import paired_cell
            dim = cell.dim or _dataset_dim(cell)
            spec = spec_of(cell, dim)
            rows.base.update(dim=dim, transform=spec.transform,
                             conditioner=spec.conditioner, direction=spec.direction)
            paired_cell(cell, rows, spec, device, _status_of, _error)
            check_load(rows, "end")
            rows.status("ok", "", wall_s=time.perf_counter() - t0)
            return 0
        backend = adapters.load(cell.backend)
        rows.base.update(backend_version=backend.version())
        dim, images, target = cell.dim, None, None
        if cell.kind == "train" and cell.dataset in IMAGE_NAMES:
            images = load_images(cell.dataset, path=cell.data_path or None,
                                 n_train=cell.n_train or None, n_val=cell.n_val or None,
                                 n_test=cell.n_test or None, seed=cell.seed)
            spec = ImageSpec(arch=cell.arch, shape=images.shape, levels=cell.image_levels,
                             steps=cell.image_steps, hidden=cell.image_hidden)
            rows.base.update(dim=spec.dim, transform="affine", conditioner="coupling",
                             direction="density")
        else:
            if cell.kind == "train":
                dim = rows.base["dim"] = _dataset_dim(cell)
            elif cell.kind == "vi":
                from flowbench.datasets import targets
                target = targets.load(cell.dataset)
                dim = rows.base["dim"] = target.dim
            spec = spec_of(cell, dim)
            rows.base.update(transform=spec.transform, conditioner=spec.conditioner,
                             direction=spec.direction)
        variant = None if cell.variant == "default" else cell.variant
        train = adapters.TrainConfig(lr=1e-3 if cell.lr is None else cell.lr,
                                     clip_norm=cell.clip_norm or None)
        flow = backend.build(spec, seed=cell.seed, device=device, variant=variant,
                             train=train)
        rows.base["variant"] = flow.variant
        rows.add("num_params", flow.num_params(), "count")
        data = None
        if cell.kind == "train":
            from .training import train_cell  # scipy and the datasets: train cells only
            data = train_cell(flow, backend, cell, rows, images)
        elif cell.kind == "vi":
            from .variational import vi_cell
            vi_cell(flow, target, cell, rows)
        time_ops(flow, backend, rows, cell, data, target)
        rows.add("peak_host_mem", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                 "bytes", statistic="max")
        peak = peak_device_memory(backend, device)
        if peak is not None:
            rows.add("peak_device_mem", peak, "bytes", statistic="max")
        check_load(rows, "end")
    except Exception as exc:  # the cell's status row says what went wrong; rows so far stay
        rows.status(_status_of(exc), _error(exc), traceback=traceback.format_exc(limit=4),
                    wall_s=time.perf_counter() - t0)
        return 0
    rows.status("ok", "", wall_s=time.perf_counter() - t0)
    return 0


def describe(out: str, threads: int, names=None) -> int:
    from flowbench import adapters

    from .flops import gemm_peak
    from .timing import timer_overhead

    from .flops import load_check

    from .flops import memory_bandwidth

    info = {"backends": {}, "calibration": {
        "timer_overhead_s": timer_overhead(), "gemm_peak_gflops": gemm_peak(),
        "load_check_gflops": load_check(), "load_avg_1m": os.getloadavg()[0],
        "mem_bandwidth_gbs": memory_bandwidth(), "framework_peaks": {}, "threads": threads}}
    for name, why in adapters.available().items():
        if names and name not in names:
            continue
        entry = {"variants": [], "reason": why, "missing": {}, "version": "",
                 "kind": "matched" if name in adapters.MATCHED else "peer"}
        if why is None:
            try:
                b = adapters.load(name)
                default = b._variant(None)  # listed first: "default" in a matrix means it
                entry.update(variants=[default] + [v for v in b.variants if v != default],
                             version=b.version())
                if hasattr(b, "capabilities"):
                    entry["missing"] = {a: r for a, r in b.capabilities().items() if r}
                peaks = info["calibration"]["framework_peaks"]
                if b.framework not in peaks:  # each framework's own matmul, once
                    peaks[b.framework] = b.matmul_gflops()
            except Exception as exc:  # a backend that fails to load is unavailable, with why
                entry["reason"] = _error(exc)
        info["backends"][name] = entry
    from .conventions import conventions_markdown
    info["conventions"] = conventions_markdown(
        [n for n, e in info["backends"].items() if e["reason"] is None])
    with open(out, "w") as f:
        json.dump(info, f)
    return 0


def pin_threads(n: int) -> None:
    """The same CPU thread count for every framework: environment variables (read at
    import by OpenMP, MKL, OpenBLAS, XLA and the tfp backend), torch's setter, and the
    process affinity, which is what bounds XLA's CPU thread pool."""
    environment.set_threads(n)
    try:
        cpus = sorted(os.sched_getaffinity(0))
        given = os.environ.get("FLOWBENCH_CPUS")  # the runner's slot when cells run side by side
        if given:
            cpus = [c for c in map(int, given.split(",")) if c in cpus] or cpus
        os.sched_setaffinity(0, cpus[:n])
    except (AttributeError, OSError):  # not Linux: the variables still apply
        pass


def watch_parent(interval: float = 0.25) -> None:
    """End this worker, and every process of its group, once the process that started it
    is gone (a driver or Dask worker killed with SIGKILL cannot end it): no worker outlives
    its run to load the machine under the next one. The parent's pid comes from the
    runner, so a parent that died before this process got here is noticed too."""
    parent = int(os.environ.get("FLOWBENCH_PARENT_PID") or os.getppid())

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="flowbench-watch-parent", daemon=True).start()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["describe"], ["cell"]) and os.getpgid(0) == os.getpid():
        watch_parent()  # only as its own group's leader: never kill a caller's group
    if argv[:1] == ["describe"] and len(argv) >= 3:
        pin_threads(int(argv[2]))
        return describe(argv[1], int(argv[2]), argv[3:])
    if argv[:1] == ["cell"] and len(argv) == 3:
        with open(argv[1]) as f:
            cell = Cell.from_json(f.read())
        pin_threads(cell.threads)
        return run_cell(cell, argv[2])
    print("usage: python -m flowbench.benchmarks.worker cell CELL.json ROWS.jsonl | "
          "describe OUT.json THREADS [BACKEND ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
