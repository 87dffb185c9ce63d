"""``flowbench report``: results/ (stores and CSVs) -> results/REPORT.md and figures beside it.

Tables are pivots of the tidy rows: medians with their IQR, the ratio to the fastest
backend in the same row, the sequential passes beside the time, the environment they were
measured in, and the command that reproduces them. ``frame`` reads and labels the rows,
``tables`` and ``quality`` write the sections, ``figures`` draws.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from ..tidy import write_atomic
from .frame import _label, framework, load_results
from .quality import _spread_table, quality_section
from .variational import vi_section
from .tables import (best_peak, efficiency_table, environment_section, fastest_by_framework,
                     loaded_section, memory_table, passes_table, PASSES_NOTE, problems_section,
                     roofline_table, scaling_section, single_table, time_table,
                     timing_section)

__all__ = ["best_peak", "build", "efficiency_table", "environment_section",
           "fastest_by_framework", "framework", "load_results", "loaded_section",
           "memory_table", "passes_table", "problems_section", "quality_section",
           "roofline_table", "scaling_section", "single_table", "time_table",
           "timing_section", "_label", "_spread_table"]


FASTEST_NOTE = (
    "`timed`: *interleaved, n rounds* is a paired cell (matrix field `paired`): the "
    "framework's backends built in one process and timed in n rounds, each round every "
    "member's op for a short block in a fresh random order; ms and IQR are the median and "
    "IQR of the round medians, the ratio the median over rounds of the two sides' ratio "
    "in the same round, so the machine's drift, which moves both, is not in it or in its "
    "SE. *separate cells* compares two cells timed in two processes at two moments: its "
    "SE holds each cell's own repeats only, not the drift between them (on a shared VM, "
    "+-25% over seconds).")


def unreadable_section(problems: list[str]) -> list[str]:
    if not problems:
        return []
    return ["## Files left out", "", "These files in the results folder could not be read "
            "as flowbench results and are not in any table above:", "",
            *[f"- {p}" for p in problems], ""]


def build(results_dir="results", out: str | None = None) -> Path:
    """REPORT.md (and figures beside it) from a results folder, or from one results file
    (the report then goes beside that file)."""
    results_dir = Path(results_dir)
    folder = results_dir.parent if results_dir.is_file() else results_dir
    out_path = Path(out) if out else folder / "REPORT.md"
    df = load_results(results_dir)
    for problem in df.attrs.get("unreadable", []):
        print(f"flowbench report: left out {problem}", file=sys.stderr)
    lines = ["# flowbench report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} from "
             f"{', '.join(sorted(df['file'].unique())) if len(df) else 'no results'} in "
             f"`{results_dir}` by `flowbench report`. Times are medians over repeats, each "
             "call blocked until done, first call (trace + compile) apart; inputs on the "
             "device before timing.", ""]
    if df.empty:
        write_atomic(out_path, "\n".join(lines + ["No results yet: run `flowbench run "
                                                  "quick` first.", ""]
                                          + unreadable_section(df.attrs.get("unreadable", []))))
        return out_path
    lines += environment_section(df)
    lines += quality_section(df, out_path.parent)
    lines += vi_section(df, out_path.parent)
    timing = df[df["kind"].isin(["time", "train", "paired"])]
    machines = df["machine"].astype(object).where(df["machine"].notna(), "?").astype(str)
    several = machines[timing.index].nunique() > 1
    # one section per machine where a matrix ran on several: no table, ratio or
    # efficiency ever compares times (or a peak) measured on two machines
    for (name, machine), g in timing.groupby(["matrix", machines[timing.index]], sort=False):
        peak = best_peak(df[(df["kind"] == "calibration") & (machines == machine)])
        where = f" on `{machine}`" if several else ""
        lines += [f"## Matrix `{name}`{where}", "",
                  f"Reproduce: `flowbench run {name}` then `flowbench report`.", ""]
        dims, batches = g["dim"].nunique(), g["batch"].nunique()
        if dims > 2 or batches > 2:
            lines += scaling_section(g, out_path.parent, name)
        else:
            lines += timing_section(g, name, peak)
        fast = fastest_by_framework(g)
        if len(fast):
            lines += ["### Fastest matched variant against the fastest peer, per framework",
                      "", fast.to_markdown(index=False, floatfmt=".3g"), "", FASTEST_NOTE, ""]
        pt = passes_table(g)
        if len(pt):
            lines += ["### Conditioner passes per layer (`log_prob / sample`), measured", "",
                      pt.to_markdown(), "", PASSES_NOTE, ""]
        mem = memory_table(g)
        if len(mem):
            lines += ["### Peak host memory of the cell's process (MB, frameworks included)",
                      "", mem.astype(object).where(mem.notna(), None).to_markdown(
                          floatfmt=".0f", missingval=""), ""]
    conv = folder / "conventions.md"
    if conv.exists():
        text = re.sub(r"^(#+) ", r"#\1 ", conv.read_text(), flags=re.M)  # one level down
        lines += [text, ""]
    lines += loaded_section(df)
    lines += problems_section(df)
    lines += unreadable_section(df.attrs.get("unreadable", []))
    write_atomic(out_path, "\n".join(lines))
    return out_path
