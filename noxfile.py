"""nox sessions. All of them share ONE environment (.nox/flowbench, flowbench[all]):
the frameworks weigh about 4 GB and installing them once per session would be waste.
The environment is rebuilt only when the dependencies in pyproject.toml change."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"

ROOT = Path(__file__).resolve().parent
ENV = ROOT / ".nox" / "flowbench"


def install_fingerprint() -> str:
    """A hash of what decides the installed packages (dependencies, extras, scripts,
    build system): tool settings (ruff, pytest) change without a 4 GB reinstall."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    keys = {"build": project.get("build-system"),
            **{k: project["project"].get(k) for k in ("dependencies",
                                                     "optional-dependencies", "scripts")}}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


def shared_env(session: nox.Session) -> Path:
    """The shared environment's bin/ folder, created or refreshed when needed."""
    stamp = ENV / ".flowbench-installed"
    want = install_fingerprint()
    if not (stamp.exists() and stamp.read_text() == want):
        session.log(f"building the shared environment in {ENV} (once; ~4 GB)")
        session.run_install(sys.executable, "-m", "venv", "--clear", str(ENV), external=True)
        # run_install: `nox --install-only` builds the environment and runs nothing else
        session.run_install(str(ENV / "bin" / "python"), "-m", "pip", "install",
                            "--quiet", "--upgrade", "pip", external=True)
        session.run_install(str(ENV / "bin" / "python"), "-m", "pip", "install",
                            "--quiet", "-e", f"{ROOT}[all]", external=True)
        stamp.write_text(want)
    return ENV / "bin"


def run(session: nox.Session, *args: str, **kw) -> None:
    bin_dir = shared_env(session)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "VIRTUAL_ENV": str(ENV), "TF_CPP_MIN_LOG_LEVEL": "2"}
    session.run(str(bin_dir / args[0]), *args[1:], env=env, external=True, **kw)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pytest's exit code 5, no tests collected, fails the session).

    Two pytest-xdist workers by default (FLOWBENCH_TEST_WORKERS changes it; 0 runs in
    one process): most of the suite's time is single-threaded tracing and compiling, and
    each worker holds all three frameworks, about 4-6 GB, so more workers need more RAM.
    """
    workers = os.environ.get("FLOWBENCH_TEST_WORKERS", "2")
    # worksteal: an idle worker takes queued tests from the busy one, so the run does not
    # end on one worker draining a queue of slow (compiling) tests while the other waits
    dist = ["--dist", "worksteal"] if workers != "0" else []
    run(session, "python", "-m", "pytest", "-n", workers, *dist,
        *(session.posargs or ["-q", "--durations=25"]))


@nox.session
def quick(session: nox.Session) -> None:
    """The main job: every available backend x arch preset, briefly trained on Eq. 39;
    the store results/quick/ and results/REPORT.md."""
    run(session, "flowbench", "run", "quick", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """A named matrix (or a .toml file): nox -s bench -- scaling [--shard 1/4] [--force]."""
    args = session.posargs or ["standard"]
    run(session, "flowbench", "run", *args)


@nox.session
def report(session: nox.Session) -> None:
    """results/ (stores and CSVs) -> results/REPORT.md and its figures."""
    run(session, "flowbench", "report", *session.posargs)


@nox.session
def asv(session: nox.Session) -> None:
    """The asv suite in the shared environment: nox -s asv -- run --quick --python=same;
    nox -s asv -- publish. Default: a quick run of the suite, then publish."""
    if session.posargs:
        run(session, "python", "-m", "asv", *session.posargs)
        return
    run(session, "python", "-m", "asv", "machine", "--yes")
    # --python=same saves results only under an explicit commit hash
    run(session, "python", "-m", "asv", "run", "--quick", "--python=same",
        "--set-commit-hash", "HEAD", "--show-stderr")
    run(session, "python", "-m", "asv", "publish")


# mutmut's exit codes (mutmut/stats.py, 3.8.1) -> the columns of the score table
MUTANT_STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
                 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
                 255: "timeout", None: "not run"}


def dev_pin(name: str) -> str:
    """The ``name==version`` requirement of the dev extra in pyproject.toml."""
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["dev"]
    return next(r for r in dev if r.split("==")[0] == name)


def mutant_scores(session: nox.Session) -> None:
    """Per-module counts from mutants/*.meta (mutmut's cache): killed/total and the rest."""
    cols = ["killed", "survived", "no tests", "timeout", "not run", "other"]
    session.log(f"{'module':<32}{'killed/total':>14}" + "".join(f"{c:>10}" for c in cols[1:]))
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(ROOT / "mutants"))[:-len(".meta")]
        if not (ROOT / module).exists():
            continue  # the cache of a module since moved or split
        codes = json.loads(meta.read_text())["exit_code_by_key"].values()
        n = {c: 0 for c in cols}
        for code in codes:
            n[MUTANT_STATUS.get(code, "other")] += 1
        session.log(f"{module:<32}{n['killed']:>8}/{len(codes):<5}"
                    + "".join(f"{n[c]:>10}" for c in cols[1:]))


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of timing, results, metrics, report and the float64
    reference on their fast tests, both named in [tool.mutmut] of pyproject.toml; the
    scores are in docs/MUTANTS.md. Not a default session nor CI: a full run is long.

    nox -s mutants                              run; resumes, a cached verdict stands
    nox -s mutants -- run 'flowbench.benchmarks.timing*'  test these mutants again (new tests)
    nox -s mutants -- results | show NAME | browse    any other mutmut command
    FLOWBENCH_MUTANT_WORKERS sets the parallel mutants of a run (default: all CPUs).
    Mutants, mutmut's cache and the score table's input live in mutants/ (git-ignored);
    remove it for a fresh run.
    """
    bin_dir = shared_env(session)
    pin = dev_pin("mutmut")
    have = session.run(str(bin_dir / "python"), "-c", "import importlib.metadata as m; "
                       "print(m.version('mutmut'))", external=True, silent=True,
                       success_codes=[0, 1])  # 1: not installed
    if (have or "").strip() != pin.split("==")[1]:  # an environment built before it
        session.run(str(bin_dir / "python"), "-m", "pip", "install", "--quiet", pin,
                    external=True)
    args = list(session.posargs or ["run"])
    workers = os.environ.get("FLOWBENCH_MUTANT_WORKERS")
    if args[0] == "run" and workers:
        args[1:1] = ["--max-children", workers]
    run(session, "mutmut", *args)
    if args[0] == "run":
        mutant_scores(session)


@nox.session(venv_backend="venv")
def lint(session: nox.Session) -> None:
    """ruff, in a small environment of its own (it needs none of the frameworks)."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", "adapters", "datasets", "benchmarks", "tests", "noxfile.py")


@nox.session(name="gpu-check")
def gpu_check(session: nox.Session) -> None:
    """On a machine with CUDA: GPU against CPU parity, smoke and scaling matrices on the
    GPU, peak device memory -> results/gpu-check.md (exits 3 where no GPU is visible)."""
    run(session, "flowbench", "gpu-check", *session.posargs)


@nox.session(name="list")
def list_(session: nox.Session) -> None:
    """Backends (and why one is unavailable), presets, datasets."""
    run(session, "flowbench", "list")


@nox.session(name="flowbench")
def flowbench_cli(session: nox.Session) -> None:
    """Any flowbench command in the shared environment: nox -s flowbench -- compile-time ..."""
    run(session, "flowbench", *(session.posargs or ["--help"]))
