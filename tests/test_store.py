"""The results store: typed columns, files with the umask's mode, claims that keep two
drivers off one cell and pass on when their owner is gone, files that do not read named
and skipped (never fatal, never half-read), and rows from before the store imported."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flowbench.benchmarks import report, results
from flowbench.benchmarks.store import Store, file_key, is_store
from flowbench.benchmarks.tidy import write_atomic

ROW = dict(cell="a", backend="torch", arch="maf", kind="time", op="log_prob", metric="time",
           statistic="median", batch=16, dim=2, value=1e-3, status="ok", error="",
           run_id="r", machine="m")
STATUS = {**ROW, "op": "", "metric": "status", "value": float("nan")}


def test_columns_have_one_type_whatever_the_rows_carried(tmp_path):
    store = Store(tmp_path / "s")
    store.put_cell("a", [{**ROW, "batch": 16.0, "wall_s": 2.5, "odd": 1},
                         {**STATUS, "batch": None, "odd": "text"}])
    schema = pq.read_schema(store.cell_path("a"))
    assert str(schema.field("batch").type) == "int64" and str(schema.field("dim").type) == "int64"
    assert str(schema.field("value").type) == "double"
    assert str(schema.field("op").type) == "string" and str(schema.field("odd").type) == "string"
    assert str(schema.field("wall_s").type) == "double"
    df = store.read()
    assert list(df.batch.isna()) == [False, True] and df.batch.iloc[0] == 16
    assert pd.isna(df.op.iloc[1])  # an empty op reads back as a CSV's does
    with pytest.raises(ValueError, match="without a status row"):
        store.put_cell("b", [ROW])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        store = Store(tmp_path / "s")
        store.put_cell("a", [ROW, STATUS])
        write_atomic(tmp_path / "x.csv", "a\n")
    finally:
        os.umask(old)
    for path in (store.cell_path("a"), tmp_path / "x.csv", tmp_path / "s" / "STORE"):
        assert os.stat(path).st_mode & 0o777 == mode, path


def test_a_claim_keeps_others_off_until_released_or_its_owner_is_gone(tmp_path):
    store = Store(tmp_path / "s")
    assert store.claim("cell/1", lease_s=60)
    assert not store.claim("cell/1", lease_s=60)  # held by a live owner (this process)
    store.release("cell/1")
    assert store.claim("cell/1", lease_s=60)
    claim_file = store.path / "claims" / f"{file_key('cell/1')}.claim"

    # a dead owner on this host: taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim_file.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                      "started": 1.0, "expires": time.time() + 1e6,
                                      "token": "x"}))
    assert store.claim("cell/1", lease_s=60)
    assert json.loads(claim_file.read_text())["pid"] == os.getpid()
    # another host: held until its lease ends, then taken over
    other = {"host": "elsewhere", "pid": 1, "started": 0.0, "token": "y"}
    claim_file.write_text(json.dumps({**other, "expires": time.time() + 600}))
    assert not store.claim("cell/1", lease_s=60)
    claim_file.write_text(json.dumps({**other, "expires": time.time() - 1}))
    assert store.claim("cell/1", lease_s=60)
    # a process that reused a dead owner's pid is not the owner
    claim_file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                      "started": -5.0, "expires": time.time() + 1e6,
                                      "token": "z"}))
    assert store.claim("cell/1", lease_s=60)
    store.release("cell/1")
    assert not list((store.path / "claims").iterdir())


def test_unreadable_files_are_named_and_skipped_never_fatal(tmp_path):
    store = Store(tmp_path / "quick")
    store.put_cell("a", [ROW, STATUS])
    store.put_cell("b", [{**ROW, "cell": "b"}, {**STATUS, "cell": "b"}])
    data = store.cell_path("b").read_bytes()
    store.cell_path("b").write_bytes(data[: len(data) // 2])  # truncated
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n3,4,5,6,7\n")  # stray, malformed
    problems: list = []
    df = results.read(store.path, problems=problems)
    assert set(df.cell) == {"a"} and len(df) == 2  # b left out whole
    assert len(problems) == 1 and "b.parquet" in problems[0]
    assert store.statuses() == {"a": "ok", "b": "unreadable"}  # --retry-failed redoes b
    text = report.build(tmp_path).read_text()
    assert "## Files left out" in text and "b.parquet" in text and "notes.csv" in text


def test_a_folder_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(FileExistsError, match="not a results store"):
        Store(tmp_path / "mine")
    with pytest.raises(FileNotFoundError, match="not a flowbench results store"):
        Store(tmp_path / "none", create=False)


def test_a_store_another_driver_is_creating_now_is_joined(tmp_path):
    """Two drivers started together on a new --out: the second sees only the first one's
    half-written mark and makes the same store (CI once failed the two-driver test so)."""
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / ".STORE.k3j9x2").write_text("")
    assert is_store(Store(tmp_path / "new").path)


def test_a_csv_from_before_the_store_is_imported_by_merge(tmp_path):
    cal = {**ROW, "cell": "calibration-r", "kind": "calibration", "metric": "gemm_peak",
           "op": "", "value": 90.0}
    rows = [ROW, STATUS, {**ROW, "cell": "half"}, cal]  # "half" never finished
    pd.DataFrame(rows).to_csv(tmp_path / "old.csv", index=False)
    merged = results.merge([tmp_path / "old.csv"], tmp_path / "new")
    assert len(merged) == 4
    store = Store(tmp_path / "new", create=False)
    assert store.done_cells() == {"a"}
    assert [p.name for p in (store.path / "calibration").iterdir()] == ["r-m.parquet"]
    assert set(results.read(store.path).cell) == {"a", "calibration-r"}
