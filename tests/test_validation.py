"""Bad matrices and command lines: one line ``flowbench: error: ...`` naming the field
(and the sweep) and what it must be, exit 2, before any cell runs; and the edge cases that
used to give a silently wrong result or a traceback."""

from __future__ import annotations

import os

import pytest

from flowbench.benchmarks import cli, results

BASE = '''kind = "time"
backends = ["torch"]
archs = ["maf"]
layers = 1
hidden = [4]
ops = ["log_prob"]
dims = [2]
batches = [8]
min_time = 0.0
min_repeats = 2
'''


def _run(tmp_path, capsys, toml: str | None = None, args=()):
    path = tmp_path / "m.toml"
    path.write_text(toml if toml is not None else BASE)
    out = tmp_path / "out"
    rc = cli.main(["run", str(path), "--out", str(out), *args])
    return rc, capsys.readouterr().err, out


BAD = {
    "misspelt backend": (None, ["--backends", "torch", "jaxx"],
                         "unknown backend(s) ['jaxx']; known: torch, jax, tfp"),
    "backends as a string": (BASE.replace('["torch"]', '"torch"'), [],
                             "backends must be a non-empty list of names, got 'torch' "
                             '(a list is written ["torch"])'),
    "archs as a string": (BASE.replace('["maf"]', '"maf"'), [],
                          "archs must be a non-empty list of names, got 'maf'"),
    "layers as a word": (BASE.replace("layers = 1", 'layers = "five"'), [],
                         "layers must be an int >= 1, got 'five'"),
    "zero layers": (BASE.replace("layers = 1", "layers = 0"), [],
                    "layers must be an int >= 1, got 0"),
    "timeout as a string": (BASE + 'timeout = "60"\n', [],
                            "timeout must be a number > 0, got '60'"),
    "negative timeout": (BASE + "timeout = -5\n", [], "timeout must be a number > 0, got -5"),
    "empty archs": (BASE.replace('["maf"]', "[]"), [], "archs must be a non-empty list"),
    "bad sweep field": (BASE + "[[sweep]]\ndims = [4]\n[[sweep]]\nlayers = 0\n", [],
                        "[[sweep]] 2: layers must be an int >= 1, got 0"),
    "bad command-line dims": (None, ["--dims", "0"],
                              "the command line: dims must be a non-empty list of ints >= 1"),
    "unknown op": (BASE.replace('["log_prob"]', '["fly"]'), [], "ops must be a non-empty "
                   "list of names from log_prob, inverse, forward, sample, sample_and_log_prob, "
                   "train_step"),
    "boolean quality as int": (BASE + "quality = 1\n", [], "quality must be true or false"),
    "unknown field": (BASE + "layer = 3\n", [], "unknown matrix field(s) ['layer']"),
    "not TOML": ("dims = [\n", [], "not valid TOML"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_matrix_or_command_line_is_one_line_and_exit_2(case, tmp_path, capsys):
    toml, args, message = BAD[case]
    rc, err, out = _run(tmp_path, capsys, toml, args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowbench: error: "), err
    assert message in lines[0], lines[0]
    assert not out.exists()  # nothing ran, nothing written


@pytest.mark.parametrize("where", ["proc", "file-parent"])
def test_an_unwritable_results_path_is_named_before_anything_runs(where, tmp_path, capsys):
    if where == "proc":
        bad = "/proc/flowbench-results"
    else:
        (tmp_path / "afile").write_text("x")
        bad = str(tmp_path / "afile" / "results")
    rc = cli.main(["run", str(_matrix(tmp_path)), "--out", bad])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"flowbench: error: cannot write results to {bad}")
    assert len(err.splitlines()) == 1


def _matrix(tmp_path, text=BASE):
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


def test_out_names_a_folder_of_stores_and_export_writes_the_csv(tmp_path, capsys):
    out = tmp_path / "mine" / "x.csv"
    assert cli.main(["run", str(_matrix(tmp_path)), "--out", str(out)]) == 2
    assert "flowbench export" in capsys.readouterr().err and not out.exists()
    folder = tmp_path / "mine"
    assert cli.main(["run", str(_matrix(tmp_path)), "--out", str(folder)]) == 0
    assert (folder / "m" / "STORE").is_file() and (folder / "REPORT.md").is_file()
    assert cli.main(["export", str(folder / "m")]) == 0
    csv = folder / "m.csv"
    assert set(results.read(csv).query("metric == 'status' and kind != 'calibration'")
               .status) == {"ok"}
    assert results.read(csv).shape == results.read(folder / "m").shape
    assert cli.main(["report", "--results", str(csv)]) == 0  # a file is a results source
    # the export beside its store is not read twice by the report of the folder
    assert cli.main(["report", "--results", str(folder)]) == 0
    assert "from m in" in (folder / "REPORT.md").read_text()


def test_sweep_timeout_is_honoured_and_a_run_where_every_cell_fails_exits_1(tmp_path,
                                                                             capsys):
    text = BASE + "timeout = 120\n[[sweep]]\ntimeout = 0.5\n"
    out = tmp_path / "out"
    assert cli.main(["run", str(_matrix(tmp_path, text)), "--out", str(out)]) == 1
    df = results.read(out / "m")
    st = df[(df.metric == "status") & (df.kind != "calibration")]
    assert list(st.status) == ["timeout"] and "after 0.5 s" in st.error.iloc[0]
    report = (out / "REPORT.md").read_text()
    assert "Cells and ops that did not run" in report and "timed out after 0.5 s" in report


def test_report_of_results_where_nothing_was_measured(tmp_path):
    """Only skipped and failed cells (no batch, no op column at all): the report still
    writes the table of what did not run."""
    rows = [dict(cell=c, backend=b, arch="maf", kind="time", metric="status", status=s,
                 error=e, run_id="r", matrix="m", value=float("nan")) for c, b, s, e in
            (("a", "nflows", "skipped", "nflows does not offer it"),
             ("b", "torch", "failed", "boom"))]
    results.append(tmp_path / "m.csv", rows)
    from flowbench.benchmarks import report
    text = report.build(tmp_path).read_text()
    assert "Cells and ops that did not run" in text and "boom" in text
    assert "nflows does not offer it" in text


def test_the_results_folder_check_leaves_nothing_behind(tmp_path):
    cli.writable(tmp_path / "new")
    assert os.listdir(tmp_path / "new") == []


# -- the Python API: typed errors that name the field, one seed rule ---------------------

SPEC_CASES = {  # FlowSpec keyword -> value: each a SpecError naming the field
    "hidden-str": ("hidden", "abc"),
    "hidden-float": ("hidden", (1.7,)),
    "hidden-float-int": ("hidden", (64.0,)),
    "hidden-str-width": ("hidden", ("64",)),
    "hidden-bool": ("hidden", (True,)),
    "hidden-empty": ("hidden", ()),
    "hidden-zero": ("hidden", (0,)),
    "dim-float": ("dim", 2.0),
    "layers-zero": ("layers", 0),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_a_bad_spec_field_is_a_spec_error_naming_it(case):
    from flowbench import adapters
    field, value = SPEC_CASES[case]
    with pytest.raises(adapters.SpecError, match=field):
        adapters.FlowSpec(**{"arch": "maf", "dim": 2, field: value})


def test_spec_widths_take_numpy_ints_and_one_int():
    import numpy as np

    from flowbench import adapters
    assert adapters.FlowSpec(arch="maf", dim=2, hidden=(np.int64(8), 4)).hidden == (8, 4)
    assert adapters.FlowSpec(arch="maf", dim=2, hidden=16).hidden == (16,)


SEEDS = {"negative": -1, "2**31": 2 ** 31, "2**64": 2 ** 64, "float": 1.5, "bool": True,
         "str": "1"}
DRAWS = {"int32 wrap": 2 ** 32 + 3, "1e12": 10 ** 12, "beyond memory": 2 * 10 ** 9,
         "zero": 0, "float": 3.0}


@pytest.mark.parametrize("name", ["torch", "jax", "tfp"])
def test_one_seed_rule_and_a_sample_count_limit_in_every_entry_point(name):
    """build, sample and base_sample refuse the same seeds; a sample count that TF would
    wrap around (2**32 + 3 gave 3 rows), that aborted jax's process (1e12) or that cannot
    fit in memory is refused before any framework sees it."""
    import numpy as np

    from flowbench import adapters

    from .conftest import load_or_skip
    backend = load_or_skip(name)
    spec = adapters.FlowSpec(arch="maf", dim=2, hidden=(8,))
    flow = backend.build(spec, seed=2 ** 31 - 1)  # the largest seed is a seed
    for seed in SEEDS.values():
        with pytest.raises(adapters.InvalidInput, match="seed"):
            backend.build(spec, seed=seed)
        for draw in (flow.sample, flow.base_sample):
            with pytest.raises(adapters.InvalidInput, match="seed"):
                draw(4, seed=seed)
    for n in DRAWS.values():
        with pytest.raises(adapters.InvalidInput, match=f"n={n}|positive int n"):
            flow.sample(n)
    assert flow.sample(4, seed=np.int64(2 ** 31 - 1)).shape == (4, 2)


def test_the_int32_row_limit_holds_on_a_machine_with_memory_to_spare(monkeypatch):
    from flowbench import adapters
    from flowbench.adapters import base

    from .conftest import load_or_skip
    monkeypatch.setattr(base, "_memory_bytes", lambda: 2 ** 62)
    flow = load_or_skip("torch").build(adapters.FlowSpec(arch="maf", dim=2, hidden=(8,)))
    with pytest.raises(adapters.InvalidInput, match=r"above 2147483647 \(2\*\*31 - 1\)"):
        flow.sample(2 ** 32 + 3)
