"""One installed namespace: the distribution puts only ``flowbench`` into site-packages,
and a foreign top-level ``datasets`` (Hugging Face's, in many ML environments) neither
shadows flowbench's datasets nor is shadowed by them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools_builds_here() -> bool:
    """The environment's setuptools can build the project (pyproject asks for >= 77)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools
    return int(setuptools.__version__.split(".")[0]) >= 77


def test_the_wheel_installs_only_flowbench(tmp_path):
    isolation = ["--no-build-isolation"] if _setuptools_builds_here() else []
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation,
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("flowbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"flowbench", "flowbench-0.1.0.dist-info"}
    for must in ("flowbench/adapters/__init__.py", "flowbench/datasets/__init__.py",
                 "flowbench/benchmarks/cli.py", "flowbench/benchmarks/matrices/quick.toml"):
        assert must in names, must
    assert not any(n.startswith("flowbench/__init__") for n in names)  # a namespace


def test_the_package_list_is_every_package_folder():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    tree = {"flowbench." + str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
            for d in ("adapters", "datasets", "benchmarks") for p in (ROOT / d).rglob(
                "__init__.py")}
    assert listed == tree


def test_a_foreign_datasets_package_does_not_break_flowbench(tmp_path):
    foreign = tmp_path / "datasets"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("def load_dataset(name):\n    return 'hf:' + name\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = ("import datasets; assert datasets.load_dataset('x') == 'hf:x'; "
            "from flowbench import datasets as fd; "
            "d = fd.load('eq39', n_train=50, n_val=0, n_test=20, seed=0); "
            "print(d.train.shape, datasets.__file__ != fd.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(50, 2) True"
    cli = subprocess.run([sys.executable, "-m", "flowbench.benchmarks.cli", "list"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert cli.returncode == 0 and "eq39" in cli.stdout, cli.stderr[-2000:]
