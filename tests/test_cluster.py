"""--executor dask: the smoke matrix on a 2-worker LocalCluster gives the cells and statuses
of the local executor (its expansion, every cell ok), with a Dask worker killed mid-cell on
the way; dask-jobqueue's job
script for a GPU matrix asks for the GPUs. Everything starts and stops here (no network)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from flowbench.benchmarks import cli, cluster, matrix, results, runner

distributed = pytest.importorskip("distributed")


def _statuses(store) -> dict:
    df = results.read(store)
    st = df[(df.metric == "status") & (df.op.fillna("") == "") & (df.kind != "calibration")]
    return dict(zip(st.cell, st.status))


def _running_task(client, prefix: str):
    """(worker address, pid) of a worker executing a task whose key starts with ``prefix``."""
    processing = client.processing()
    for address, keys in processing.items():
        if any(str(k).startswith(prefix) for k in keys):
            return address, client.run(os.getpid, workers=[address])[address]
    return None


def test_smoke_on_a_local_cluster_matches_the_local_executor_through_a_killed_worker(
        tmp_path):
    # torch and jax: the executor is under test here, not TF (tfp's smoke cell adds a
    # TensorFlow import to every describe and cell, 15 s of CI for nothing new)
    m = matrix.load("smoke", {"threads": 1, "backends": ["torch", "jax"]})

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50) as lc, \
            distributed.Client(lc) as client:
        executor = cluster.DaskExecutor(scheduler=lc.scheduler_address, retries=2)
        done: dict = {}
        driver = threading.Thread(target=lambda: done.setdefault(
            "summary", runner.run_matrix(m, tmp_path / "dask", executor=executor,
                                         progress=False)))
        driver.start()
        victim = None
        deadline = time.time() + 240
        while victim is None and driver.is_alive() and time.time() < deadline:
            victim = _running_task(client, "cell-")
            time.sleep(0.05)
        assert victim is not None, "no cell task was seen running"
        os.kill(victim[1], signal.SIGKILL)  # the Dask worker process, mid-cell
        driver.join(timeout=400)
        assert not driver.is_alive()
        assert victim[1] not in client.run(os.getpid).values()

    # the local executor's cells are the matrix's expansion, each ok on this machine
    # (test_matrix runs them); the Dask run must give the same
    summary = done["summary"]
    want = {c.key for c in matrix.expand(m, summary.described["backends"])}
    dask_st = _statuses(tmp_path / "dask")
    assert dask_st.keys() == want
    # the killed cell was started again on a live worker (or, past its retries, a failed
    # row saying the worker died): never lost, never a half-stored cell
    failed = {k for k, s in dask_st.items() if s != "ok"}
    assert len(failed) <= 1 and all(dask_st[k] == "failed" for k in failed)
    rows = results.read(tmp_path / "dask")
    for cell in failed:
        assert rows[(rows.cell == cell) & (rows.metric == "status")].error.str.contains(
            "Dask worker").all()
    assert summary.ran == 2 and sum(summary.statuses.values()) == 2
    timed = rows[(rows.metric == "time") & (rows.statistic == "median")]
    assert "sample_and_log_prob" in set(timed.op)  # every smoke op, this one too
    cal = rows[rows.kind == "calibration"]
    assert cal.machine.notna().all() and cal.run_id.nunique() == 1
    assert not list((tmp_path / "dask" / "claims").iterdir())


def test_slurm_and_pbs_job_scripts_ask_for_the_gpus(tmp_path):
    """Built, not submitted: the script a GPU matrix would send to the batch system."""
    pytest.importorskip("dask_jobqueue")
    opts = cluster.options_from(["queue=gpu", "cores=8", "memory=32GB", "gpus=2",
                                 "walltime=02:00:00"])
    assert opts["cores"] == 8 and opts["gpus"] == 2 and opts["queue"] == "gpu"
    want = {"slurm": ["#SBATCH --gres=gpu:2", "#SBATCH -p gpu", "#SBATCH -t 02:00:00"],
            "pbs": ["ngpus=2"]}
    for kind, lines in want.items():
        built = cluster.jobqueue_cluster(kind, opts)
        try:
            script = built.job_script()
        finally:
            built.close()
        for line in [*lines, "--resources GPU=2"]:
            assert line in script, (kind, line)


def test_cluster_choices_are_checked_before_anything_starts(tmp_path, capsys):
    for bad in (["--executor", "dask"], ["--executor", "dask", "--workers", "2",
                                         "--scheduler", "tcp://x:1"],
                ["--workers", "2"], ["--executor", "dask", "--jobqueue", "slurm",
                                     "--cluster-option", "novalue"]):
        assert cli.main(["run", "smoke", "--out", str(tmp_path), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("flowbench: error:") and "Traceback" not in err
    with pytest.raises(cluster.ClusterError, match="cannot reach the Dask scheduler"):
        cluster.DaskExecutor(scheduler="tcp://127.0.0.1:9", connect_timeout=2).client()
