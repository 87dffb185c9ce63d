"""The ``flowbench`` command: list, run."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import adapters
import datasets

from .quick import QuickConfig, run_quick, summary

RUN_PRESETS = {"quick": "every available backend x arch preset, trained briefly on Eq. 39"}


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
        status = "[green]available[/green]" if why is None else f"[yellow]unavailable[/yellow]: {why}"
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
    t = Table(title="run presets")
    t.add_column("name")
    t.add_column("description")
    for name, doc in RUN_PRESETS.items():
        t.add_row(name, doc)
    console.print(t)
    return 0


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def cmd_run(args) -> int:
    import pandas as pd
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = _console()
    cfg = QuickConfig(steps=args.steps, threads=args.threads, seed=args.seed,
                      backends=tuple(args.backends) if args.backends else None,
                      archs=tuple(args.archs) if args.archs else QuickConfig.archs)
    for a in cfg.archs:
        adapters.FlowSpec(arch=a)  # unknown arch: typed error before any work
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("cells", total=None)

        def progress(i, n, name):
            bar.update(task, completed=i, total=n, description=f"cell {name}")

        rows = run_quick(cfg, progress=progress, log=console.print)
    table, failed = summary(rows)
    out = Path(args.out)
    write_atomic(out / f"{args.preset}.csv", pd.DataFrame(rows).to_csv(index=False))
    md = [f"# flowbench {args.preset}: {RUN_PRESETS[args.preset]}", "",
          f"Dataset {cfg.dataset}, {cfg.steps} Adam steps (lr {cfg.lr}, batch {cfg.batch}), "
          f"{cfg.layers} layers of {cfg.hidden} hidden, data standardised on the training "
          f"split (NLL reported in the data's own units), {cfg.threads} CPU threads. "
          f"Times are medians over repeats of a batch of {cfg.time_batch}.", "",
          table.to_markdown(index=False, floatfmt=".4g"), ""]
    if len(failed):
        md += ["## Cells that did not run", "", failed.to_markdown(index=False), ""]
    md += [f"Reproduce: `flowbench run --preset {args.preset} --steps {cfg.steps} "
           f"--threads {cfg.threads} --seed {cfg.seed}`", ""]
    write_atomic(out / f"{args.preset}.md", "\n".join(md))
    console.print(table.to_markdown(index=False, floatfmt=".4g"), markup=False,
                  highlight=False, soft_wrap=True)
    for _, r in failed.iterrows():
        console.print(f"[red]{r['backend']}/{r['arch']} {r['status']}[/red]: {r['error']}")
    console.print(f"wrote {out / (args.preset + '.csv')} and {out / (args.preset + '.md')}")
    return 0 if not len(failed[failed["status"] == "failed"]) else 1


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

    df = pd.DataFrame(rows)
    write_atomic(out / "passes.csv", df.assign(**environment.describe()).to_csv(index=False))
    not_run = df[df.status != "ok"][["backend", "arch", "status", "error"]]
    text = "\n".join([
        f"# Conditioner passes per layer at dim {args.dim} ({args.layers} layers)", "",
        "Each cell is `log_prob / sample`, measured (not assumed) in each backend. An "
        f"autoregressive flow pays {args.dim} passes per layer in its sequential direction; "
        "a backend above 1 in the other direction evaluates the conditioner again for "
        "the log-det.", "", pass_table(rows).to_markdown(), "",
        *(["## Not built", "", not_run.to_markdown(index=False), ""] if len(not_run) else []),
        f"Reproduce: `flowbench passes --dim {args.dim} --layers {args.layers}`", ""])
    write_atomic(out / "passes.md", text)
    print(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flowbench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="backends (and why one is unavailable), presets, datasets")
    r = sub.add_parser("run", help="run a benchmark preset")
    r.add_argument("--preset", choices=sorted(RUN_PRESETS), default="quick")
    r.add_argument("--backends", nargs="*", help="default: every available backend")
    r.add_argument("--archs", nargs="*", help="default: every arch preset")
    r.add_argument("--steps", type=int, default=QuickConfig.steps)
    r.add_argument("--threads", type=int, default=QuickConfig.threads)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="results")
    c = sub.add_parser("compile-time", help="first-call (compile) time of every op over dims")
    c.add_argument("--backends", nargs="*", help="default: every available backend")
    c.add_argument("--archs", nargs="*", default=["maf", "iaf", "naf", "realnvp"])
    c.add_argument("--dims", nargs="*", type=int, default=[2, 64])
    c.add_argument("--layers", type=int, default=5)
    c.add_argument("--batch", type=int, default=256)
    c.add_argument("--threads", type=int, default=QuickConfig.threads)
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
    args = p.parse_args(argv)
    try:
        return {"list": cmd_list, "run": cmd_run, "compile-time": cmd_compile_time,
                "conventions": cmd_conventions, "passes": cmd_passes}[args.cmd](args)
    except (adapters.FlowbenchError, datasets.DatasetError) as exc:
        print(f"flowbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
