"""The ``flowbench`` command: list, run, merge, report, compile-time, conventions, passes,
gpu-check."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from flowbench import adapters
from flowbench import datasets

from .results import StoreError
from .tidy import write_atomic


class OutputError(adapters.FlowbenchError):
    """A results path that cannot be written, and why."""

THREADS = 2


def _console():
    from rich.console import Console
    return Console()


def cmd_list(args) -> int:
    from rich.table import Table

    console = _console()
    t = Table(title="backends")
    t.add_column("name")
    t.add_column("kind")
    t.add_column("status")
    t.add_column("offers")
    for name, why in adapters.available().items():
        kind = "matched" if name in adapters.MATCHED else "peer"
        status = ("[green]available[/green]" if why is None
                  else f"[yellow]unavailable[/yellow]: {why}")
        offers = ""
        if why is None:
            backend = adapters.load(name)
            status += f" ({backend.version()}; variants {', '.join(backend.variants)})"
            if kind == "matched":
                offers = "every preset and combination, canonical weights"
            else:
                offers = "; ".join(a if r is None else f"[dim]no {a}: {r}[/dim]"
                                   for a, r in backend.capabilities().items())
        t.add_row(name, kind, status, offers)
    console.print(t)
    t = Table(title="arch presets")
    t.add_column("arch")
    t.add_column("axes")
    t.add_column("description")
    for arch, doc in adapters.PRESET_DOCS.items():
        s = adapters.FlowSpec(arch=arch)
        t.add_row(arch, f"{s.transform}, {s.conditioner}, {s.direction}-fast", doc)
    console.print(t)
    t = Table(title="datasets")
    t.add_column("name")
    t.add_column("dim")
    t.add_column("exact log p")
    t.add_column("description")
    for name in datasets.names():
        d = datasets.density(name)
        t.add_row(name, str(d.dim), "yes" if d.log_prob is not None else "no", d.description)
    console.print(t)
    t = Table(title="matrix presets (flowbench run NAME)")
    t.add_column("name")
    t.add_column("description")
    from .matrix import presets
    for name, doc in presets().items():
        t.add_row(name, doc)
    console.print(t)
    return 0


def cmd_run(args) -> int:
    from . import matrix as M
    from .report import build
    from .runner import Interrupted, run_matrix

    console = _console()
    name = args.matrix or args.preset or "quick"
    overrides = {"backends": args.backends, "archs": args.archs, "steps": args.steps,
                 "threads": args.threads, "seeds": [args.seed] if args.seed is not None
                 else None, "dims": args.dims, "batches": args.batches,
                 "devices": [args.device] if args.device else None,
                 "timeout": args.timeout, "variants": args.variants, "jobs": args.jobs}
    m = M.load(name, overrides)
    executor = _executor(args, m)
    path = store_path(Path(args.out), m.name)
    out_dir = path.parent
    writable(out_dir)  # before the slow describe step
    try:
        summary = run_matrix(m, path, shard=args.shard, force=args.force,
                             retry_failed=args.retry_failed, executor=executor,
                             console=console)
    except StoreError as exc:
        print(f"flowbench: error: {exc}", file=sys.stderr)
        return 1
    except (FileExistsError, FileNotFoundError) as exc:  # --out is a folder, not a store
        raise OutputError(str(exc)) from None
    except Interrupted as exc:
        print(f"flowbench: interrupted ({signal.Signals(exc.signum).name}): workers ended, "
              f"claims released; {exc.stored} cell(s) stored this run are kept in {path}, "
              "and a rerun resumes from them", file=sys.stderr)
        return 130
    write_atomic(out_dir / "conventions.md", summary.described["conventions"])
    report = build(out_dir)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.statuses.items())) or "none run"
    elsewhere = (f"; {summary.elsewhere} left to another run on the same store"
                 if summary.elsewhere else "")
    console.print(f"{m.name}: {summary.cells} cells ({summary.resumed} already done; "
                  f"{counts}{elsewhere}); rows in {path}; report in {report}")
    if m.fields["kind"] == "train":
        _print_quality(path, console)
    return 0 if not (summary.statuses.get("failed") or summary.statuses.get("timeout")) else 1


def _executor(args, m):
    """None (the local executor) or a DaskExecutor from the flags and [cluster] table."""
    from .cluster import DaskExecutor, options_from

    table = dict(m.cluster)
    kind = args.executor or table.pop("executor", "local")
    if kind == "local":
        if args.scheduler or args.workers or args.jobqueue:
            raise OutputError("--scheduler, --workers and --jobqueue go with --executor dask")
        return None
    if kind != "dask":
        raise OutputError(f"unknown executor {kind!r}; known: local, dask")
    fields = {k: table.pop(k, None) for k in ("scheduler", "workers", "jobqueue", "retries")}
    given = {"scheduler": args.scheduler, "workers": args.workers, "jobqueue": args.jobqueue}
    if any(given.values()):  # the flags choose where, whatever the file said
        fields.update(given)
    retries = args.retries if args.retries is not None else fields["retries"]
    return DaskExecutor(scheduler=fields["scheduler"], workers=fields["workers"],
                        jobqueue=fields["jobqueue"],
                        options=options_from(args.cluster_option, table),
                        retries=2 if retries is None else int(retries))


def store_path(out: Path, name: str) -> Path:
    """The matrix's results store: the folder NAME inside --out."""
    if out.suffix == ".csv":
        raise OutputError(f"--out {out}: results go into a store folder now (--out names "
                          "the folder that holds it); `flowbench export` writes a CSV")
    return out / name


def writable(folder: Path) -> None:
    """The results folder exists (made if need be) and takes a file, or one line says
    which path failed and why."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".flowbench-write-check-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write results to {folder}: "
                          f"{exc.strerror or type(exc).__name__}") from None


def _print_quality(path: Path, console) -> None:
    from . import results

    df = results.read(path)
    ok = df[(df.status == "ok") & df.metric.isin(["test_nll", "time"])
            & df.statistic.isin(["mean", "median"])]
    if ok.empty:
        return
    ok = ok.assign(what=ok.metric.where(ok.op.isna() | (ok.op == ""), ok.op + " ms"),
                   v=ok.value.where(ok.metric != "time", ok.value * 1e3))
    table = ok.pivot_table(index=["arch", "backend"], columns="what", values="v",
                           aggfunc="last")
    console.print(table.to_markdown(floatfmt=".4g"), markup=False, highlight=False,
                  soft_wrap=True)


def cmd_merge(args) -> int:
    from .results import merge

    df = merge(args.files, args.out)
    print(f"merged {len(args.files)} stores or files into {args.out}: {len(df)} rows, "
          f"{df['cell'].nunique() if len(df) else 0} cells")
    return 0


def cmd_export(args) -> int:
    from .results import merge

    out = args.out or str(Path(args.store).with_suffix(".csv"))
    if not out.endswith(".csv"):
        raise OutputError(f"--out {out}: export writes a .csv file")
    df = merge([args.store], out)
    print(f"exported {args.store}: {len(df)} rows, "
          f"{df['cell'].nunique() if len(df) else 0} cells, to {out}")
    return 0


def cmd_report(args) -> int:
    from .report import build

    print(f"wrote {build(args.results, args.out)}")
    return 0


def cmd_compile_time(args) -> int:
    import pandas as pd

    from . import environment
    from .compile_time import compile_rows

    environment.set_threads(args.threads)
    names = args.backends or [b for b, why in adapters.available().items() if why is None]
    rows = []
    for b in names:
        for arch in args.archs:
            rows += compile_rows(b, arch, args.dims, layers=args.layers, batch=args.batch)
    df = pd.DataFrame(rows)
    table = df.pivot_table(index=["backend", "arch", "op"], columns="dim",
                           values=["compile_s", "median_s", "passes"])
    table.columns = [f"{what} (dim {dim})" for what, dim in table.columns]
    out = Path(args.out)
    write_atomic(out / "compile_time.csv", df.assign(**environment.describe(),
                                                     threads=args.threads).to_csv(index=False))
    text = table.reset_index().to_markdown(index=False, floatfmt=".4g")
    write_atomic(out / "compile_time.md", "\n".join([
        "# First-call (trace + compile) time by dim", "",
        f"compile_s = first call - steady median; {args.layers} layers of 128x128, batch "
        f"{args.batch}, {args.threads} CPU threads.", "", text, ""]))
    print(text)
    return 0


def cmd_gpu_check(args) -> int:
    from .gpu_check import run

    return run(Path(args.out), backends=args.backends, archs=args.archs)


def _names(args) -> list[str]:
    return args.backends or [b for b, why in adapters.available().items() if why is None]


def cmd_conventions(args) -> int:
    from .conventions import conventions_markdown

    text = conventions_markdown(_names(args))
    write_atomic(Path(args.out) / "conventions.md", text)
    print(text)
    return 0


def cmd_passes(args) -> int:
    from .passes import pass_rows

    rows = pass_rows(_names(args), args.archs, dim=args.dim, layers=args.layers)
    write_passes(rows, Path(args.out), args)
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def write_passes(rows, out: Path, args) -> str:
    import pandas as pd

    from . import environment
    from .passes import pass_table
    from .report.tables import PASSES_NOTE

    df = pd.DataFrame(rows)
    write_atomic(out / "passes.csv", df.assign(**environment.describe()).to_csv(index=False))
    not_run = df[df.status != "ok"][["backend", "arch", "status", "error"]]
    text = "\n".join([
        f"# Conditioner passes per layer at dim {args.dim} ({args.layers} layers)", "",
        "Each cell is `log_prob / sample`, measured (not assumed) in each backend. An "
        f"autoregressive flow pays {args.dim} passes per layer in its sequential direction; "
        "a backend above 1 in the other direction evaluates the conditioner again for "
        "the log-det.", "", pass_table(rows).to_markdown(), "", PASSES_NOTE, "",
        *(["## Not built", "", not_run.to_markdown(index=False), ""] if len(not_run) else []),
        f"Reproduce: `flowbench passes --dim {args.dim} --layers {args.layers}`", ""])
    write_atomic(out / "passes.md", text)
    print(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flowbench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="backends (and why one is unavailable), presets, datasets")
    r = sub.add_parser("run", help="run a benchmark matrix (a preset or a TOML file)")
    r.add_argument("matrix", nargs="?", help="preset name or .toml path (default: quick)")
    r.add_argument("--preset", help="the same as the positional MATRIX")
    r.add_argument("--backends", nargs="*", help="default: the matrix's (usually all)")
    r.add_argument("--archs", nargs="*", help="default: the matrix's")
    r.add_argument("--variants", nargs="*", help="execution variants (default, all, names)")
    r.add_argument("--dims", nargs="*", type=int)
    r.add_argument("--batches", nargs="*", type=int)
    r.add_argument("--steps", type=int, help="training steps (train matrices)")
    r.add_argument("--threads", type=int, help=f"CPU threads per framework ({THREADS})")
    r.add_argument("--seed", type=int)
    r.add_argument("--jobs", type=int, help="cells side by side, each on its own --threads "
                   "CPUs (default: the matrix's; 1 for timings meant for comparison)")
    r.add_argument("--device", choices=["cpu", "gpu"])
    r.add_argument("--timeout", type=float, help="seconds per cell")
    r.add_argument("--shard", help="i/N: run the i-th of N slices of the matrix")
    r.add_argument("--force", action="store_true", help="measure cells already done again")
    r.add_argument("--retry-failed", action="store_true",
                   help="measure again the cells stored as failed or timed out")
    r.add_argument("--out", default="results",
                   help="folder of results stores; this matrix's is OUT/NAME")
    r.add_argument("--executor", choices=["local", "dask"],
                   help="local subprocesses (default) or a Dask cluster")
    r.add_argument("--scheduler", help="dask: address of a running scheduler (tcp://...)")
    r.add_argument("--workers", type=int, help="dask: a LocalCluster of N workers here")
    r.add_argument("--jobqueue", choices=["slurm", "pbs"],
                   help="dask: a dask-jobqueue cluster (options: --cluster-option)")
    r.add_argument("--cluster-option", action="append", metavar="KEY=VALUE",
                   help="dask-jobqueue option (cores, memory, queue, walltime, jobs, gpus)")
    r.add_argument("--retries", type=int,
                   help="dask: times a cell whose worker died is started again (2)")
    g = sub.add_parser("merge", help="combine results stores and CSV files into one store "
                       "(a folder) or one CSV (--out X.csv); later inputs win")
    g.add_argument("files", nargs="+")
    g.add_argument("--out", required=True)
    e = sub.add_parser("export", help="a results store as one tidy CSV")
    e.add_argument("store")
    e.add_argument("--out", help="default: STORE.csv")
    rp = sub.add_parser("report",
                        help="results/ (stores and CSVs) -> results/REPORT.md and figures")
    rp.add_argument("--results", default="results")
    rp.add_argument("--out", help="default: RESULTS/REPORT.md")
    c = sub.add_parser("compile-time", help="first-call (compile) time of every op over dims")
    c.add_argument("--backends", nargs="*", help="default: every available backend")
    c.add_argument("--archs", nargs="*", default=["maf", "iaf", "naf", "realnvp"])
    c.add_argument("--dims", nargs="*", type=int, default=[2, 64])
    c.add_argument("--layers", type=int, default=5)
    c.add_argument("--batch", type=int, default=256)
    c.add_argument("--threads", type=int, default=THREADS)
    c.add_argument("--out", default="results")
    v = sub.add_parser("conventions", help="how each backend differs from the canonical model")
    v.add_argument("--backends", nargs="*", help="default: every available backend")
    v.add_argument("--out", default="results")
    q = sub.add_parser("passes", help="measured conditioner passes of log_prob and sample")
    q.add_argument("--backends", nargs="*", help="default: every available backend")
    q.add_argument("--archs", nargs="*", default=list(adapters.PRESETS))
    q.add_argument("--dim", type=int, default=8)
    q.add_argument("--layers", type=int, default=4)
    q.add_argument("--out", default="results")
    gc = sub.add_parser("gpu-check", help="GPU against CPU parity, the smoke and a small "
                        "scaling matrix on the GPU, peak device memory: RESULTS/gpu-check.md")
    gc.add_argument("--backends", nargs="*", default=list(adapters.MATCHED))
    gc.add_argument("--archs", nargs="*", default=list(adapters.PRESETS))
    gc.add_argument("--out", default="results")
    args = p.parse_args(argv)
    if getattr(args, "variants", None) and len(args.variants) == 1 and args.variants[0] in (
            "default", "all"):
        args.variants = args.variants[0]
    try:
        return {"list": cmd_list, "run": cmd_run, "compile-time": cmd_compile_time,
                "conventions": cmd_conventions, "passes": cmd_passes, "merge": cmd_merge,
                "export": cmd_export,
                "report": cmd_report, "gpu-check": cmd_gpu_check}[args.cmd](args)
    except (adapters.FlowbenchError, datasets.DatasetError) as exc:
        print(f"flowbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a run (a run says more and returns 130 itself)
        print("flowbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
