"""Results files keep every measurement: one row per (cell, op, metric, statistic, batch,
step), whichever way the rows arrive (appended, re-measured with --force, run as shards
and merged, read back from CSV and appended again)."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flowbench.benchmarks import cli, results

ROOT = Path(__file__).resolve().parent.parent
ROW = dict(cell="a", backend="torch", op="log_prob", metric="time", statistic="median",
           batch=16, value=1.0, status="ok")


def _keys(df: pd.DataFrame) -> list[tuple]:
    key = [c for c in results.ROW_KEY if c in df]
    text = pd.DataFrame({c: results._key_text(df[c]) for c in key})
    return sorted(text.itertuples(index=False, name=None))


def test_every_batch_size_and_step_of_a_cell_is_its_own_row(tmp_path):
    path = tmp_path / "r.csv"
    rows = [{**ROW, "batch": b, "value": float(b)} for b in (1, 16, 256)]
    rows += [{**ROW, "op": "train_step", "metric": "curve_val_nll", "batch": 64,
              "step": s, "value": -s} for s in (10, 20, 30)]
    results.append(path, rows)
    df = results.read(path)
    times = df[df.metric == "time"].set_index("batch")["value"]
    assert times.to_dict() == {1: 1.0, 16: 16.0, 256: 256.0}
    assert df[df.metric == "curve_val_nll"].set_index("step")["value"].to_dict() == {
        10: -10, 20: -20, 30: -30}


def test_a_measurement_taken_again_replaces_the_old_one(tmp_path):
    """Read back from CSV, numbers come as floats and an empty op as NaN; the same
    measurement written again must still replace, not duplicate, the old row."""
    path = tmp_path / "r.csv"
    status = {**ROW, "op": "", "metric": "status", "statistic": "value", "batch": None,
              "value": float("nan")}
    results.append(path, [ROW, status])
    results.append(path, [{**ROW, "value": 2.0}, status])
    assert (results.read(path).metric == "status").sum() == 1  # "" and NaN are one op
    results.append(path, [{**ROW, "batch": 16.0, "value": 3.0}])
    df = results.read(path)
    assert len(df) == 2
    assert df[df.metric == "time"].value.tolist() == [3.0]
    assert (df.metric == "status").sum() == 1


def test_replace_cells_drops_every_old_row_of_the_cell_only(tmp_path):
    path = tmp_path / "r.csv"
    results.append(path, [{**ROW, "batch": b} for b in (16, 32)] + [{**ROW, "cell": "b"}])
    results.append(path, [{**ROW, "batch": 64, "value": 9.0}], replace_cells=["a"])
    df = results.read(path)
    assert sorted(zip(df.cell, df.batch)) == [("a", 64), ("b", 16)]


def test_merge_keeps_the_union_and_the_later_file_wins(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    results.append(a, [{**ROW, "batch": 16}, {**ROW, "batch": 32}])
    results.append(b, [{**ROW, "batch": 32, "value": 5.0}, {**ROW, "cell": "c"}])
    merged = results.merge([a, b], tmp_path / "m.csv")
    got = {(r.cell, r.batch): r.value for r in merged.itertuples()}
    assert got == {("a", 16): 1.0, ("a", 32): 5.0, ("c", 16): 1.0}
    assert _keys(results.read(tmp_path / "m.csv")) == _keys(merged)


TWO_BATCHES = """
kind = "time"
backends = ["torch"]
archs = ["maf", "nice"]
layers = 1
hidden = [4]
ops = ["log_prob", "sample"]
dims = [2]
batches = [16, 32]
min_time = 0.0
min_repeats = 2
timeout = 120
"""


def _measured(df: pd.DataFrame) -> pd.DataFrame:
    """The rows a cell measured: everything but calibration, one run's ids and stamps."""
    return df[df.kind != "calibration"]


def test_batches_survive_force_and_two_drivers_share_a_store_end_to_end(tmp_path):
    """A matrix with two batch sizes run by two drivers started together on one store,
    then again with --force, then exported: every (cell, op, batch) time is present once
    each way, and each cell was measured by exactly one of the two drivers."""
    m = tmp_path / "tiny.toml"
    m.write_text(TWO_BATCHES)
    run = ["run", str(m)]
    store = tmp_path / "shared" / "tiny"
    cmd = [sys.executable, "-m", "flowbench.benchmarks.cli", *run, "--out",
           str(store.parent)]
    drivers = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    said = [d.communicate(timeout=600) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], said
    first = _measured(results.read(store))
    want = {(arch, op, batch) for arch, op, batch in
            itertools.product(["maf", "nice"], ["log_prob", "sample"], [16, 32])}
    med = first[(first.metric == "time") & (first.statistic == "median")]
    assert set(zip(med.arch, med.op, med.batch.astype(int))) == want and len(med) == len(want)
    assert (first.groupby("cell").run_id.nunique() == 1).all()
    ran = sum(int(n) for out, _ in said
              for n in re.findall(r"(\d+) ok", " ".join(out.split())))
    assert ran == 2  # two cells, each measured once between the two drivers
    assert not list((store / "claims").iterdir())  # every claim released
    # every cell checked the machine's load at its start and end, and was judged by it
    checks = first[first.metric == "load_check"]
    assert sorted(checks.statistic) == ["end", "end", "start", "start"]
    assert (checks.value > 0).all() and (first.metric == "load_ratio").sum() == 2
    assert first.loaded.notna().all()
    cal = results.read(store).query("kind == 'calibration'")  # one per driver
    peaks = cal[cal.metric == "gemm_peak"].set_index("source")["value"]
    assert {"numpy", "torch"} <= set(peaks.index) and (peaks > 0).all()
    assert (cal.metric == "mem_bandwidth").groupby(cal.run_id).sum().tolist() == [1, 1]

    assert cli.main([*run, "--out", str(store.parent), "--force"]) == 0
    forced = _measured(results.read(store))
    assert _keys(forced) == _keys(first)
    assert forced.run_id.nunique() == 1 and not set(forced.run_id) & set(first.run_id)

    assert cli.main(["export", str(store), "--out", str(tmp_path / "all.csv")]) == 0
    assert _keys(_measured(results.read(tmp_path / "all.csv"))) == _keys(first)


@pytest.mark.parametrize("column", results.ROW_KEY)
def test_every_key_column_is_needed(column, tmp_path):
    """Two rows that differ only in one key column are two measurements."""
    other = {"cell": "b", "backend": "jax", "op": "sample", "metric": "passes",
             "statistic": "iqr", "batch": 32, "step": 7, "source": "jax"}[column]
    path = tmp_path / "r.csv"
    results.append(path, [{**ROW, "step": 1}, {**ROW, "step": 1, column: other}])
    assert len(results.read(path)) == 2


def test_reading_a_missing_or_empty_file_gives_the_columns_and_no_rows(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    for path in (tmp_path / "missing.csv", tmp_path / "empty.csv"):
        df = results.read(path)
        assert df.empty and list(df.columns) == results.COLUMNS


def test_a_cell_is_done_only_once_its_status_row_is_stored():
    rows = pd.DataFrame([{**ROW, "cell": "measuring"}, {**ROW, "cell": "finished"},
                         {**ROW, "cell": "finished", "metric": "status"}])
    assert results.done_cells(rows) == {"finished"}
    assert results.done_cells(pd.DataFrame({"cell": ["x"]})) == set()  # no metric column
