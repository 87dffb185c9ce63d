"""The asv suite (benchmarks/suite) cannot rot: asv imports and checks it, and a quick run
of a tiny subset (torch, maf, dim 2) in this environment writes results and publishes.

asv runs as a subprocess of this interpreter (`sys.executable -m asv`), from the repo
root, against a copy of asv.conf.json (absolute paths: asv resolves relative ones from
the config file's folder) whose results/html/env dirs live in tmp_path, with HOME in
tmp_path too (asv keeps its machine file in ~/.asv-machine.json), so neither .asv/
nor the home directory is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("asv")

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "suite"

EXPECTED = {
    "bench_ops.LogProb.time_log_prob",
    "bench_ops.Inverse.time_inverse",
    "bench_ops.Forward.time_forward",
    "bench_ops.Sample.time_sample",
    "bench_ops.TrainStep.time_train_step",
    "bench_compile.CompileTime.track_compile_time",
    "bench_training.Training.track_test_nll",
    "bench_memory.PeakMem.peakmem_build_log_prob",
}
TINY = {"FLOWBENCH_ASV_BACKENDS": "torch", "FLOWBENCH_ASV_ARCHS": "maf",
        "FLOWBENCH_ASV_DIMS": "2", "FLOWBENCH_ASV_THREADS": "1"}


def _config(tmp_path: Path) -> Path:
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    assert conf["benchmark_dir"] == "benchmarks/suite"
    # branches: HEAD, not main, so a detached checkout (CI) works too
    conf.update(repo=str(ROOT), branches=["HEAD"], benchmark_dir=str(SUITE),
                results_dir=str(tmp_path / "results"), html_dir=str(tmp_path / "html"),
                env_dir=str(tmp_path / "env"))
    path = tmp_path / "asv.conf.json"
    path.write_text(json.dumps(conf, indent=2))
    return path


def _asv(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, **TINY, "HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "asv", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"asv {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _git_head() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def test_asv_check_discovers_suite(tmp_path):
    conf = _config(tmp_path)
    proc = _asv(tmp_path, "check", "--python=same", "--config", str(conf))
    assert "No problems found" in proc.stdout + proc.stderr
    # the discovery asv check ran, written out: benchmark names and their parameters
    out = tmp_path / "discovered.json"
    subprocess.run([sys.executable, "-m", "asv.benchmark", "discover", str(SUITE), str(out)],
                   cwd=ROOT, env={**os.environ, **TINY}, check=True, timeout=60)
    found = {b["name"]: b for b in json.loads(out.read_text())}
    assert set(found) == EXPECTED
    assert found["bench_ops.LogProb.time_log_prob"]["param_names"] == ["backend", "arch", "dim"]
    assert found["bench_ops.LogProb.time_log_prob"]["params"] == [["'torch'"], ["'maf'"], ["2"]]
    assert found["bench_compile.CompileTime.track_compile_time"]["unit"] == "seconds"
    assert found["bench_training.Training.track_test_nll"]["unit"] == "nats"


def test_asv_quick_run_tiny_subset(tmp_path):
    head = _git_head()
    if head is None:
        pytest.skip("asv run records results against a git commit; not a git checkout")
    conf = _config(tmp_path)
    _asv(tmp_path, "machine", "--yes", "--machine", "flowbench-test", "--config", str(conf))
    # one benchmark of each kind (time_, track_, peakmem_): every one is its own process
    _asv(tmp_path, "run", "--quick", "--python=same", "--set-commit-hash", head,
         "--bench", "LogProb|track_test_nll|peakmem", "--machine", "flowbench-test",
         "--show-stderr", "--config", str(conf), timeout=300)
    files = [p for p in (tmp_path / "results" / "flowbench-test").glob("*.json")
             if p.name != "machine.json"]
    assert len(files) == 1, files
    data = json.loads(files[0].read_text())
    assert data["commit_hash"] == head
    ran = {"bench_ops.LogProb.time_log_prob", "bench_training.Training.track_test_nll",
           "bench_memory.PeakMem.peakmem_build_log_prob"}
    assert ran <= set(data["results"])

    def first(name):  # the value of the (only) parameter combination
        return dict(zip(data["result_columns"], data["results"][name]))["result"][0]

    assert first("bench_ops.LogProb.time_log_prob") > 0
    assert first("bench_memory.PeakMem.peakmem_build_log_prob") > 0
    assert 0 < first("bench_training.Training.track_test_nll") < 10
    _asv(tmp_path, "publish", "--config", str(conf))
    assert (tmp_path / "html" / "index.html").is_file()
