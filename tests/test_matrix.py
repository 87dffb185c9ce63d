"""The matrix runner: expansion, sharding, results files, resume after a kill, timeouts,
the report. Cells that run use tiny torch flows; the rest needs no framework."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flowbench.benchmarks import flops, matrix, report, results, runner
from flowbench.benchmarks.store import Store, file_key

ROOT = Path(__file__).resolve().parent.parent

DESCRIBED = {
    "torch": {"variants": ["eager", "compile"], "reason": None, "missing": {}},
    "tfp": {"variants": ["function", "eager", "xla"], "reason": None, "missing": {}},
    "nflows": {"variants": ["eager"], "reason": None, "missing": {"naf": "no NAF here"}},
    "jax": {"variants": [], "reason": "jax is not installed: pip install ...", "missing": {}},
}


def write_matrix(tmp_path, text: str) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def test_every_preset_loads_and_expands():
    for name in matrix.presets():
        m = matrix.load(name)
        cells = matrix.expand(m, DESCRIBED)
        assert cells and len({c.key for c in cells}) == len(cells)


def test_sweeps_union_batches_and_skips_carry_reasons():
    m = matrix.load("scaling", {"backends": ["torch", "nflows", "jax"]})
    cells = matrix.expand(m, DESCRIBED)
    torch_maf = {c.dim: list(c.batches) for c in cells
                 if c.backend == "torch" and c.arch == "maf"}
    assert sorted(torch_maf) == [2, 4, 8, 16, 32, 64]
    assert torch_maf[8] == [1, 16, 256, 4096, 16384] and torch_maf[2] == [256]
    skip = {(c.backend, c.arch): c.skip for c in cells}
    assert skip[("nflows", "naf")] == "nflows does not offer 'naf': no NAF here"
    assert skip[("nflows", "maf")] is None
    assert "not installed" in skip[("jax", "maf")]
    with pytest.raises(matrix.MatrixError, match=r"unknown backend\(s\) \['nosuch'\]"):
        matrix.load("scaling", {"backends": ["torch", "nosuch"]})


def test_variants_default_is_the_backends_default_and_all_is_every_one():
    default = matrix.expand(matrix.load("maf-cpu", {"backends": ["tfp"],
                                                    "variants": "default"}), DESCRIBED)
    assert [c.variant for c in default] == ["function"]
    every = matrix.expand(matrix.load("maf-cpu", {"backends": ["tfp", "torch"]}), DESCRIBED)
    assert sorted(c.variant for c in every) == ["compile", "eager", "eager",
                                                    "function", "xla"]
    named = matrix.expand(matrix.load("maf-cpu", {"backends": ["torch"],
                                                  "variants": ["nosuch"]}), DESCRIBED)
    assert "no execution variant 'nosuch'" in named[0].skip


def test_variants_per_backend_leave_the_others_at_their_default(tmp_path):
    """``variants = {tfp = ["function", "xla"]}``: tfp in both, every other backend in its
    default only, also when the command line narrows the backends (a second sweep naming
    tfp's variants became torch/xla skipped cells under ``--backends torch``)."""
    path = write_matrix(tmp_path, 'kind = "time"\nbackends = ["all"]\narchs = ["maf"]\n'
                        'variants = {tfp = ["function", "xla"]}\n')
    both = matrix.expand(matrix.load(str(path), {"backends": ["tfp", "torch", "nflows"]}),
                         DESCRIBED)
    assert sorted((c.backend, c.variant) for c in both) == [
        ("nflows", "eager"), ("tfp", "function"), ("tfp", "xla"), ("torch", "eager")]
    assert not any(c.skip for c in both)
    narrowed = matrix.expand(matrix.load(str(path), {"backends": ["torch"]}), DESCRIBED)
    assert {(c.backend, c.variant, c.skip) for c in narrowed} == {("torch", "eager", None)}
    path = write_matrix(tmp_path, 'kind = "time"\nbackends = ["torch"]\narchs = ["maf"]\n'
                        'variants = {torch = "all"}\n')
    assert sorted(c.variant for c in matrix.expand(matrix.load(str(path)), DESCRIBED)) == [
        "compile", "eager"]
    for bad in ('{torch = 3}', '{}', '{torch = []}'):
        path = write_matrix(tmp_path, f'kind = "time"\narchs = ["maf"]\nvariants = {bad}\n')
        with pytest.raises(matrix.MatrixError, match="variants"):
            matrix.load(str(path))


def test_bad_matrices_are_clear_errors(tmp_path):
    with pytest.raises(matrix.MatrixError, match="unknown matrix preset 'nope'"):
        matrix.load("nope")
    with pytest.raises(matrix.MatrixError, match="unknown matrix field"):
        matrix.load(str(write_matrix(tmp_path, 'archs = ["maf"]\nlayer = 3\n')))
    with pytest.raises(matrix.MatrixError, match="ops must be"):
        matrix.load(str(write_matrix(tmp_path, 'ops = ["log_prob", "fly"]\n')))
    with pytest.raises(matrix.MatrixError, match="dims must be"):
        matrix.load(str(write_matrix(tmp_path, "dims = [0]\n")))
    with pytest.raises(matrix.MatrixError, match="not valid TOML"):
        matrix.load(str(write_matrix(tmp_path, "dims = [\n")))
    with pytest.raises(matrix.MatrixError, match="TOML"):
        matrix.load(str(tmp_path / "m.yaml"))
    from flowbench import adapters
    with pytest.raises(adapters.UnknownArch):
        matrix.load("quick", {"archs": ["sylvester"]})


def test_shards_are_disjoint_and_cover_the_matrix():
    cells = matrix.expand(matrix.load("standard"), DESCRIBED)
    parts = [matrix.shard(cells, f"{i}/3") for i in (1, 2, 3)]
    keys = [c.key for p in parts for c in p]
    assert sorted(keys) == sorted(c.key for c in cells) and len(set(keys)) == len(keys)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(matrix.MatrixError, match="shard"):
            matrix.shard(cells, bad)


def _compared(c):
    return (c.kind, c.arch, c.dim, c.dataset, c.device, c.seed)


def test_cells_a_table_compares_run_one_after_another_and_share_a_shard():
    cells = matrix.expand(matrix.load("peers"), DESCRIBED)
    groups = [_compared(c) for c in cells]
    runs = [g for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    assert len(runs) == len(set(runs))  # each arch's backends back to back, never split
    first = [c for c in cells if c.arch == cells[0].arch]
    assert {c.backend for c in first} >= {"torch", "jax", "tfp", "zuko", "tfp-keras"}
    assert [c.variant for c in first if c.backend == "torch"] == ["eager", "compile"]
    standard = matrix.expand(matrix.load("standard"), DESCRIBED)
    where = {}
    for i in (1, 2, 3):
        for c in matrix.shard(standard, f"{i}/3"):
            assert where.setdefault(_compared(c), i) == i  # one machine per comparison
    assert set(where.values()) == {1, 2, 3}


def test_results_append_dedupe_replace_and_merge(tmp_path):
    row = dict(cell="a", backend="torch", op="log_prob", metric="time", statistic="median",
               batch=16, value=1.0, status="ok")
    path = tmp_path / "r.csv"
    results.append(path, [row, {**row, "metric": "status", "op": ""}])
    results.append(path, [{**row, "value": 2.0}])
    df = results.read(path)
    assert len(df) == 2 and df[df.metric == "time"].value.tolist() == [2.0]
    assert results.done_cells(df) == {"a"}
    results.append(path, [{**row, "cell": "b"}], replace_cells=["a"])
    assert set(results.read(path).cell) == {"b"}
    other = tmp_path / "s.csv"
    results.append(other, [{**row, "cell": "c"}, {**row, "cell": "b", "value": 5.0}])
    merged = results.merge([path, other], tmp_path / "m.csv")
    assert sorted(merged.cell) == ["b", "c"] and merged.set_index("cell").value["b"] == 5.0
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_flops_of_a_known_network():
    from flowbench import adapters
    spec = adapters.FlowSpec(arch="maf", dim=2, layers=3, hidden=(16, 16))
    assert flops.flops_per_pass(spec) == 2 * (2 * 16 + 16 * 16 + 16 * 4)
    assert flops.op_flops(spec, "train_step", 3, 10) == 3 * 3 * 10 * flops.flops_per_pass(spec)


TINY = """
kind = "time"
backends = ["torch"]
archs = ["maf", "realnvp", "nice"]
layers = 2
hidden = [8, 8]
ops = ["log_prob", "sample"]
dims = [2]
batches = [32]
min_time = 0.01
min_repeats = 3
timeout = 120
"""


def _workers_of(mark: str) -> dict[int, int]:
    """pid -> process group of every cell worker started with ``mark`` in its environment
    (a driver's workers inherit it)."""
    found = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FLOWBENCH_TEST_MARK") == mark and \
                    proc.cmdline()[-3:-2] == ["cell"]:
                found[proc.pid] = os.getpgid(proc.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. A zombie does not: killed grandchildren
    (a worker's ``git``) wait for init to reap them, which here takes up to 2 s."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (psutil.Error, ProcessLookupError):
            continue
    return False


def _driver(path, out):
    """A driver subprocess, marked so that its workers can be found (they inherit it)."""
    import uuid
    mark = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "flowbench.benchmarks.cli", "run", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "FLOWBENCH_TEST_MARK": mark})
    return proc, mark, cmd


def _busy_after(proc, mark, store, done: int) -> set[int]:
    """The process groups of the driver's cell workers once ``done`` cells are stored and
    a worker measures the next."""
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        workers = set(_workers_of(mark).values())
        if len(Store(store).done_cells() if store.exists() else ()) >= done and workers:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"no cell worker seen after {done} stored cell(s)")


def test_a_worker_ends_with_its_killed_driver(tmp_path):
    """kill -9 of the driver while a worker measures its second cell (slow ones: 3 s per
    op): the worker's process group is gone within 3 s, the first cell's rows stay."""
    path = write_matrix(tmp_path, TINY.replace("min_time = 0.01", "min_time = 3.0"))
    proc, mark, _ = _driver(path, tmp_path / "res")
    groups = _busy_after(proc, mark, tmp_path / "res" / "tiny", 1)
    proc.kill()  # SIGKILL to the driver alone, as the OOM killer or kill -9 would
    proc.communicate()
    deadline = time.time() + 3
    while any(map(_group_alive, groups)) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(map(_group_alive, groups)), "a worker outlived its killed driver"
    assert 1 <= len(results.done_cells(results.read(tmp_path / "res" / "tiny"))) < 3


def test_a_terminated_run_stops_cleanly_and_resumes(tmp_path):
    """SIGTERM once a cell is stored: exit 130, no traceback, no worker left, no claim
    left. Rerun: the rest are measured, the stored cells not again."""
    path = write_matrix(tmp_path, TINY)
    out = tmp_path / "res"
    store = out / "tiny"
    proc, mark, cmd = _driver(path, out)
    groups = _busy_after(proc, mark, store, 1)
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted (SIGTERM)" in err
    assert not any(map(_group_alive, groups))
    assert not list((store / "claims").iterdir())
    first = results.read(store)
    done = results.done_cells(first)
    assert 1 <= len(done) < 3

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0
    assert f"{len(done)} already done; {3 - len(done)} ok" in " ".join(rerun.stdout.split())
    second = results.read(store)
    assert len(results.done_cells(second)) == 3
    kept = second[second.cell.isin(done)]
    assert set(kept.run_id) == set(first[first.cell.isin(done)].run_id)
    rpt = (out / "REPORT.md").read_text()
    assert "`log_prob`, dim 2, batch 32" in rpt and "passes per layer" in rpt


def test_a_sigterm_while_a_worker_starts_still_ends_that_worker(monkeypatch):
    """SIGTERM lands inside ``Popen``, after the child exists and before the runner knows
    it (the moment a driver is most often stopped): the child is still killed and reaped
    before the interrupt leaves ``_spawn``."""
    import signal
    started = []

    class StoppedWhileStarting(subprocess.Popen):
        def __init__(self, args, **kw):
            super().__init__(["sleep", "60"], **kw)
            started.append(self)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler would run here, were the signal not held

    monkeypatch.setattr(runner.subprocess, "Popen", StoppedWhileStarting)
    with pytest.raises(runner.Interrupted), runner.stop_on_interrupt():
        runner._spawn(["cell"], threads=1, timeout=60)
    assert started and started[0].returncode == -signal.SIGKILL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_a_timed_out_cell_is_a_row_and_the_run_goes_on(tmp_path):
    m = matrix.load(str(write_matrix(tmp_path, TINY.replace("timeout = 120",
                                                            "timeout = 0.5"))))
    summary = runner.run_matrix(m, tmp_path / "t", progress=False)
    df = results.read(tmp_path / "t")
    st = df[(df.metric == "status") & (df.kind != "calibration")]
    assert summary.statuses == {"timeout": 3} and set(st.status) == {"timeout"}
    assert st.error.str.contains("timed out after 0.5 s").all()


def _scaling_rows():
    rows = []
    for backend in ("torch", "jax"):
        for dim in (2, 8, 32, 64):
            for op, passes in (("log_prob", 5), ("sample", 5 * dim)):
                base = dict(cell=f"{backend}{dim}", backend=backend, variant="eager",
                            kind="time", arch="maf", dim=dim, batch=256, layers=5, op=op,
                            status="ok", statistic="median", passes=passes, run_id="r")
                rows += [{**base, "metric": "time", "value": 1e-4 * passes},
                         {**base, "metric": "passes", "value": passes,
                          "statistic": "value"},
                         {**base, "metric": "throughput", "value": 256 / (1e-4 * passes)}]
            rows.append(dict(cell=f"{backend}{dim}", backend=backend, kind="time",
                             arch="maf", dim=dim, metric="status", status="ok", op="",
                             run_id="r"))
    return rows


def test_report_scaling_table_and_figure(tmp_path):
    results.append(tmp_path / "scaling.csv", _scaling_rows())
    path = report.build(tmp_path)
    text = path.read_text()
    assert "### Against dim (batch 256)" in text and "![time against dim]" in text
    assert (tmp_path / "scaling_dim.png").stat().st_size > 10_000
    assert "32 (320)" in text and "0.5 (5)" in text  # ms (passes): MAF sample at dim 64
    growth = text[text.index("Growth"):]
    assert "32" in growth  # sample grows 64/2 = 32x, log_prob stays at 1


def test_report_without_results_says_what_to_run(tmp_path):
    assert "flowbench run quick" in report.build(tmp_path).read_text()


def test_image_cells_skip_peers_and_vector_archs_with_reasons():
    m = matrix.load("images", {"backends": ["torch", "nflows"],
                               "archs": ["glow", "realnvp", "maf"], "seeds": [0]})
    cells = matrix.expand(m, DESCRIBED)
    skip = {(c.backend, c.arch): c.skip for c in cells}
    assert skip[("torch", "glow")] is None and skip[("torch", "realnvp")] is None
    assert "no multi-scale image flow" in skip[("torch", "maf")]
    assert "peer library" in skip[("nflows", "glow")]
    glow = next(c for c in cells if c.backend == "torch" and c.arch == "glow")
    assert (glow.image_levels, glow.image_steps, glow.image_hidden) == (2, 4, 32)
    # vector cells carry no image fields, so their keys do not move
    quick = matrix.expand(matrix.load("quick", {"backends": ["torch"]}), DESCRIBED)
    assert not any("image_levels" in c.defining() for c in quick)


def test_side_by_side_cells_get_disjoint_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert runner.cpu_slots(2, 2) == [(0, 1), (2, 3)]
    assert runner.cpu_slots(1, 2) == [()]
    with pytest.raises(matrix.MatrixError, match="needs 6 CPUs"):
        runner.cpu_slots(3, 2)
    with pytest.raises(matrix.MatrixError, match="jobs must be an int >= 1, got 0"):
        matrix.load(str(write_matrix(tmp_path, "jobs = 0\n")))
    env = runner.child_env(1, (1,))
    assert env["FLOWBENCH_CPUS"] == "1" and env["OMP_NUM_THREADS"] == "1"


def test_two_jobs_run_every_cell_once(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    m = matrix.load(str(write_matrix(tmp_path, TINY + "jobs = 2\nthreads = 1\n")))
    summary = runner.run_matrix(m, tmp_path / "j", progress=False)
    df = results.read(tmp_path / "j")
    st = df[(df.metric == "status") & (df.kind != "calibration")]
    assert summary.statuses == {"ok": 3} and len(st) == 3 and st.cell.is_unique
    assert set(df[df.metric == "time"].jobs) == {2}



def test_a_cell_round_trips_through_json_and_its_key_is_its_definition():
    import dataclasses

    from flowbench.benchmarks.cell import Cell

    cell = matrix.expand(matrix.load("quick", {"backends": ["torch"]}), DESCRIBED)[0]
    run = dataclasses.replace(cell, artifacts="/tmp/a", jobs=2)
    back = Cell.from_json(run.to_json())
    assert back == run and (back.key, back.artifacts, back.jobs) == (cell.key, "/tmp/a", 2)
    assert run.keyed().key == cell.key  # run settings are not part of the key
    assert cell.replace(seed=cell.seed + 1).key != cell.key
    assert cell.replace(batches=[7]).batches == (7,) and "dim" not in cell.defining()


def _cell_rows(checks, quiet_status="ok"):
    base = dict(cell="c", backend="torch", arch="maf", op="", unit="", error="", status="ok")
    rows = [{**base, "metric": "load_check", "statistic": s, "value": v}
            for s, v in zip(("start", "end"), checks)]
    rows += [{**base, "metric": "time", "op": "log_prob", "statistic": "median", "value": 1e-3},
             {**base, "metric": "status", "statistic": "value", "value": float("nan"),
              "status": quiet_status}]
    return rows


def test_a_cell_whose_gemm_check_falls_below_the_calibration_is_flagged_loaded():
    quiet = runner.flag_load(_cell_rows([95.0, 90.0]), 100.0)
    assert not any(r["loaded"] for r in quiet)
    loaded = runner.flag_load(_cell_rows([95.0, 60.0]), 100.0)  # the slower check counts
    assert all(r["loaded"] for r in loaded)
    ratio = next(r for r in loaded if r["metric"] == "load_ratio")
    assert ratio["value"] == pytest.approx(0.6) and loaded[-1]["metric"] == "status"
    unjudged = runner.flag_load(_cell_rows([]), 100.0)  # no check: nothing to judge by
    assert [r["metric"] for r in unjudged] == ["time", "status"]
    assert not any("loaded" in r for r in unjudged)


def test_report_marks_loaded_cells_and_few_repeats(tmp_path):
    rows = []
    for backend, checks in (("torch", [100.0, 100.0]), ("jax", [100.0, 40.0])):
        for r in runner.flag_load(_cell_rows(checks), 100.0):
            rows.append({**r, "cell": backend, "backend": backend, "variant": "eager",
                         "matrix": "m", "dataset": "", "kind": "time", "dim": 2,
                         "batch": 64, "repeats": 3 if backend == "jax" else 50,
                         "run_id": "r"})
    results.append(tmp_path / "m.csv", rows)
    df = report.load_results(tmp_path)
    t = report.time_table(df, "log_prob", 2, 64)
    assert t.loc["maf", "jax"] == "1 ±nan (x1) n=3 †"
    assert t.loc["maf", "torch"] == "1 ±nan (x1)"
    text = "\n".join(report.loaded_section(df))
    assert "Cells measured under load" in text and "| jax " in text and "0.40" in text
    assert "torch" not in text.split("GEMM check / calibration")[1]


def test_retry_failed_measures_only_the_failed_and_unreadable_cells(tmp_path):
    """A store holding one ok, one failed and one damaged cell: all three are done for a
    plain rerun; --retry-failed measures the failed and the damaged one, keeps the ok one."""
    m = matrix.load(str(write_matrix(tmp_path, TINY)))
    cells = matrix.expand(m, DESCRIBED)
    store = Store(tmp_path / "s")
    for cell, status in zip(cells, ("ok", "failed", "ok")):
        store.put_cell(cell.key, [{**runner._cell_fields(cell), "op": "", "metric": "status",
                                   "status": status, "error": "", "run_id": "old"}])
    store.cell_path(cells[2].key).write_bytes(b"PAR1 damaged")
    # without --retry-failed every cell is done (a plain rerun measures none)
    assert {file_key(c.key) for c in cells} == store.done_cells()
    summary = runner.run_matrix(m, store.path, retry_failed=True, progress=False)
    assert summary.ran == 2 and summary.resumed == 1 and summary.statuses == {"ok": 2}
    df = results.read(store.path)
    st = df[(df.metric == "status") & (df.kind != "calibration")].set_index("cell")
    assert st.loc[cells[0].key, "run_id"] == "old"
    assert set(st.loc[[cells[1].key, cells[2].key], "run_id"]) == {summary.run_id}
