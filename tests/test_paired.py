"""Paired cells: one framework's backends timed in interleaved rounds in one process, and
the report's ratio from rounds measured side by side (benchmarks/paired.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flowbench.benchmarks import matrix as M
from flowbench.benchmarks import paired, report, worker
from flowbench.benchmarks.cell import Cell

from .test_report import load, row, timed


class FakeClock:
    """perf_counter for ``paired.rounds``: fake calls advance it, so a test controls how
    long every call takes, drift included."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_rounds_interleave_every_call_in_a_fresh_order(monkeypatch):
    clock, log = FakeClock(), []
    monkeypatch.setattr(paired.time, "perf_counter", clock)

    def call(name):
        def fn():
            log.append(name)
            clock.now += 1e-3
        return fn
    names = ["a", "b", "c", "d"]
    out = paired.rounds({n: call(n) for n in names}, {n: lambda _: None for n in names},
                        n_rounds=6, round_time=0.0045, rng=np.random.default_rng(1))
    # each block: one untimed call (caches as the last library left them), then 5 timed
    blocks = [log[i:i + 6] for i in range(0, len(log), 6)]
    assert len(blocks) == 6 * 4 and all(len(set(b)) == 1 for b in blocks)
    order = [b[0] for b in blocks]
    per_round = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert all(sorted(r) == names for r in per_round)  # every member in every round
    assert len({tuple(r) for r in per_round}) > 1  # and not always in the same order
    assert {n: len(v) for n, v in out.items()} == dict.fromkeys(names, 6)
    assert all(v == (pytest.approx(1e-3), 5) for n in names for v in out[n])


def test_drift_that_moves_both_sides_cancels_out_of_the_ratio(monkeypatch, tmp_path):
    """The machine runs three times slower for stretches of calls: a matched op that costs
    0.8 of its peer's in every round is 0.8, with an error far below the drift's, which
    two cells timed at two moments would not show; a round in which the speed changed
    between the two blocks does not move it."""
    clock, calls = FakeClock(), [0]
    monkeypatch.setattr(paired.time, "perf_counter", clock)

    def call(cost):
        def fn():
            calls[0] += 1
            slow = 3.0 if (calls[0] // 150) % 2 else 1.0  # drift over ~7 rounds
            clock.now += cost * slow
        return fn
    out = paired.rounds({"torch": call(0.8e-3), "zuko": call(1e-3)},
                        {"torch": lambda _: None, "zuko": lambda _: None},
                        n_rounds=12, round_time=0.01, rng=np.random.default_rng(0))
    medians = {n: [m for m, _ in v] for n, v in out.items()}
    assert max(medians["zuko"]) / min(medians["zuko"]) > 2  # the drift is in each side
    rows = [row("paired_time", m, backend=b, variant="eager", statistic="round", step=r,
                kind="paired")
            for b, ms in medians.items() for r, m in enumerate(ms)]
    fast = report.fastest_by_framework(load(tmp_path, rows)).iloc[0]
    assert (fast["matched"], fast["peer"]) == ("torch", "zuko")
    assert fast["matched / peer"] == pytest.approx(0.8)
    assert fast["± SE"] < 0.05
    assert fast["timed"] == "interleaved, 12 rounds"


def _rounds(backend, values, variant="eager", **spec):
    return [row("paired_time", v, backend=backend, variant=variant, statistic="round",
                step=r, kind="paired", **spec)
            for r, v in enumerate(values)]


def test_paired_rows_pair_rounds_by_step_and_pick_each_sides_fastest(tmp_path):
    rng = np.random.default_rng(3)
    drift = np.exp(rng.normal(0, 0.3, 8)) * 1e-3
    noise = np.exp(rng.normal(0, 0.05, 8))
    rows = (_rounds("torch", 0.9 * drift * noise) + _rounds("torch", 2 * drift, "compile")
            + _rounds("zuko", drift) + _rounds("nflows", 1.5 * drift))
    rows = list(np.random.default_rng(0).permutation(rows))  # file order means nothing
    fast = report.fastest_by_framework(load(tmp_path, rows)).iloc[0]
    logs = np.log(0.9 * noise)
    assert (fast["matched"], fast["peer"]) == ("torch", "zuko")
    assert fast["matched / peer"] == pytest.approx(np.exp(np.median(logs)))
    q1, q3 = np.percentile(logs, [25, 75])
    assert fast["± SE"] == pytest.approx(fast["matched / peer"] * np.sqrt(np.pi / 2)
                                         * (q3 - q1) / 1.349 / np.sqrt(8))
    assert fast["peer ms"] == pytest.approx(np.median(drift) * 1e3)
    q1, q3 = np.percentile(drift * 1e3, [25, 75])
    assert fast["peer IQR"] == pytest.approx(q3 - q1)


def test_a_paired_row_replaces_the_separate_cells_row_of_its_key_only(tmp_path):
    def med(backend, ms, arch="maf", variant="eager"):
        return timed(ms * 1e-3, ms * 1e-4, backend=backend, variant=variant, arch=arch)
    rows = (med("torch", 2.0) + med("zuko", 1.0) + med("torch", 3.0, "nsf")
            + med("zuko", 6.0, "nsf")
            + _rounds("torch", [1e-3] * 4) + _rounds("zuko", [2e-3] * 4))
    fast = report.fastest_by_framework(load(tmp_path, rows)).set_index("arch")
    assert fast.loc["maf", "timed"] == "interleaved, 4 rounds"
    assert fast.loc["maf", "matched / peer"] == pytest.approx(0.5)
    assert fast.loc["nsf", "timed"] == "separate cells"
    assert fast.loc["nsf", "matched / peer"] == pytest.approx(0.5)
    assert len(fast) == 2


def _matrix(tmp_path, **fields):
    def toml(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {toml(x)}' for k, x in v.items()) + "}"
        return json.dumps(v)
    text = "\n".join(f"{k} = {toml(v)}" for k, v in fields.items())
    path = tmp_path / "m.toml"
    path.write_text(text)
    return M.load(str(path))


DESCRIBED = {b: {"variants": v, "reason": None, "missing": {}} for b, v in {
    "torch": ["eager", "compile"], "zuko": ["eager"], "nflows": ["eager"],
    "jax": ["jit"], "flowjax": ["jit"], "tfp": ["function", "xla"],
    "tfp-keras": ["function"]}.items()}


def test_a_paired_matrix_adds_one_paired_cell_per_framework_with_both_sides(tmp_path):
    described = {**DESCRIBED, "nflows": {**DESCRIBED["nflows"],
                                         "missing": {"naf": "nflows has no NAF"}}}
    m = _matrix(tmp_path, backends=["torch", "zuko", "nflows", "jax", "tfp", "tfp-keras"],
                archs=["maf", "naf"], paired=True, rounds=7,
                variants={"tfp": "all", "torch": "default"})
    cells = M.expand(m, described)
    pairs = [c for c in cells if c.kind == "paired"]
    got = {(c.arch, c.backend, c.variant) for c in pairs}
    assert got == {("maf", "torch+zuko+nflows", "eager+eager+eager"),
                   ("maf", "tfp+tfp+tfp-keras", "function+xla+function"),
                   ("naf", "torch+zuko", "eager+eager"),  # a skipped member is left out
                   ("naf", "tfp+tfp+tfp-keras", "function+xla+function")}
    assert all(c.rounds == 7 and c.dim == 2 for c in pairs)  # jax has no peer here
    # each group's paired cells come right after its own cells
    for i, c in enumerate(cells):
        if c.kind == "paired":
            assert cells[i - 1].arch == c.arch
    plain = M.expand(_matrix(tmp_path, backends=["torch", "zuko", "nflows", "jax", "tfp",
                                                 "tfp-keras"], archs=["maf", "naf"],
                             variants={"tfp": "all", "torch": "default"}), described)
    assert [c.key for c in plain] == [c.key for c in cells if c.kind != "paired"]


def test_paired_cells_skip_images_and_take_a_train_groups_dataset(tmp_path):
    m = _matrix(tmp_path, kind="train", backends=["torch", "zuko"], archs=["realnvp"],
                datasets=["eq39", "digits"], paired=True)
    pairs = [c for c in M.expand(m, DESCRIBED) if c.kind == "paired"]
    assert [(c.dataset, c.dim) for c in pairs] == [("eq39", None)]
    assert pairs[0].steps is None  # a paired cell trains nothing


def test_the_paired_field_is_checked(tmp_path):
    with pytest.raises(M.MatrixError, match="paired must be true or false"):
        _matrix(tmp_path, paired="yes")
    with pytest.raises(M.MatrixError, match="rounds must be"):
        _matrix(tmp_path, rounds=1)


def test_a_paired_cell_times_every_member_and_records_one_that_cannot_build(tmp_path):
    pytest.importorskip("zuko")
    pytest.importorskip("nflows")
    cell = Cell(kind="paired", backend="torch+zuko+nflows", variant="eager+eager+default",
                arch="naf", device="cpu", seed=0, ops=("log_prob", "sample"),
                batches=(32,), threads=1, layers=1, hidden=(8,), bins=8, tail_bound=5.0,
                min_time=0.006, min_repeats=2, max_time=1.0, dim=2, rounds=3).keyed()
    out = tmp_path / "rows.jsonl"
    assert worker.run_cell(cell, str(out)) == 0
    rows = pd.DataFrame([json.loads(line) for line in out.read_text().splitlines()])
    times = rows[rows.metric == "paired_time"]
    assert set(times.groupby(["backend", "op"]).size().items()) == {
        (("torch", "log_prob"), 3), (("torch", "sample"), 3),
        (("zuko", "log_prob"), 3), (("zuko", "sample"), 3)}
    assert (times.value > 0).all() and (times.repeats >= 2).all()
    assert sorted(times.step.unique()) == [0, 1, 2]
    status = rows[rows.metric == "status"].set_index("backend")
    assert status.loc["nflows", "status"] == "skipped"
    assert "naf" in status.loc["nflows", "error"].lower()
    assert status.loc["torch+zuko+nflows", "status"] == "ok"  # the cell itself ran
