"""A benchmark matrix: a preset (benchmarks/matrices/*.toml) or a TOML file of the same
form, expanded into cells.

A cell is what one fresh subprocess measures: one backend, execution variant, spec,
device and seed (and, for training cells, one dataset), with every op and batch size of
the matrix inside it. Its key is a hash of everything that defines it, so a rerun knows
which cells are already in the results file.

Fields (top level, or per ``[[sweep]]`` table, whose values override the top level and
whose cells are the union over sweeps)::

    kind        "time" (ops timed on random input) | "train" (trained on a dataset,
                 then test NLL and the ops timed) | "vi" (trained by reverse KL on a
                 target density, ``datasets/targets.py``; then reverse KL, ESS and mode
                 coverage from metric_n draws, and the ops timed)
    backends    names, or ["all"] (every registered backend; the unavailable ones
                 become skipped rows with the reason)
    variants    "default" | "all" | a list of execution variant names | a table of
                 backend = "default" | "all" | [names] (backends it leaves out run their
                 default: ``{tfp = ["function", "xla"]}``)
    archs       arch presets;  dims, batches, ops, devices ("cpu", "gpu"), seeds
    layers, hidden, bins, tail_bound        the spec
    datasets, steps, train_batch, lr, clip_norm (0: off), n_train, n_val, n_test,
    eval_every, patience (evaluations without a better validation NLL before stopping;
    0: off), quality (normality and two-sample metrics), metric_n, null_draws
                                                                 (kind "train")
    targets, steps, train_batch (draws per step), lr, clip_norm, eval_every (the curve's
    window), metric_n (draws the fit is measured on)                  (kind "vi")
    image datasets (digits, mnist, fashion-mnist, cifar10; archs glow and realnvp, matched
    backends): image_levels, image_steps, image_hidden (the multi-scale ImageSpec),
    logit_alpha, data_path (the files of mnist/fashion-mnist/cifar10); n_train, n_val,
    n_test of 0 take the dataset's own split sizes
    threads, timeout (s per cell), min_time, min_repeats, max_time (timing loop)
    jobs        cells run side by side, each pinned to its own ``threads`` CPUs (default
                1: timings meant for comparison should not share the machine)
    paired      true: after each comparison group (kind "time" or "train", not images),
                one "paired" cell per framework that has a matched backend and a peer in
                it: those backends and variants built in one process and timed in
                interleaved rounds (``benchmarks/paired.py``), which the report's
                matched-against-peer table prefers; ``rounds`` of them (default 10)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from flowbench import adapters
from flowbench.adapters.errors import FlowbenchError
from flowbench.adapters.image import IMAGE_ARCHS
from flowbench.datasets.images import IMAGE_NAMES

from .cell import Cell

PRESET_DIR = Path(__file__).resolve().parent / "matrices"
OPS = ("log_prob", "inverse", "forward", "sample", "sample_and_log_prob", "train_step",
       "train_step_reverse_kl")
KINDS = ("time", "train", "vi")

DEFAULTS = {
    "kind": "time", "backends": ["all"], "variants": "default", "archs": ["maf"],
    "dims": [2], "batches": [1024], "ops": ["log_prob", "sample"], "devices": ["cpu"],
    "seeds": [0], "layers": 5, "hidden": [128, 128], "bins": 8, "tail_bound": 5.0,
    "datasets": ["eq39"], "targets": ["banana"], "steps": 1000, "train_batch": 256,
    "lr": 1e-3, "clip_norm": 0.0,
    "n_train": 20000, "n_val": 2000, "n_test": 5000, "eval_every": 100,
    "patience": 0, "quality": True, "metric_n": 2000, "null_draws": 20, "threads": 2,
    "timeout": 600.0, "min_time": 0.2, "min_repeats": 5, "max_time": 10.0, "description": "",
    "jobs": 1, "image_levels": 2, "image_steps": 4, "image_hidden": 32, "logit_alpha": 0.05,
    "data_path": "", "paired": False, "rounds": 10,
}
# cells on image datasets carry these too (other cells do not, so their keys stay put)
IMAGE_FIELDS = ("image_levels", "image_steps", "image_hidden", "logit_alpha", "data_path")
# fields that define a cell (and its key); the rest are run settings
SPEC_FIELDS = ("layers", "hidden", "bins", "tail_bound")
TRAIN_FIELDS = ("steps", "train_batch", "lr", "clip_norm", "n_train", "n_val", "n_test",
                "eval_every", "patience", "quality", "metric_n", "null_draws")
TIMING_FIELDS = ("min_time", "min_repeats", "max_time")
VI_FIELDS = ("steps", "train_batch", "lr", "clip_norm", "eval_every", "metric_n")


class MatrixError(FlowbenchError):
    """A matrix file or preset that cannot be used, and why."""


# The schema: every field's type and range, checked at the top level, in every [[sweep]]
# and on command-line overrides, before any cell runs.
def _int(lo):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo, \
        f"an int >= {lo}"


def _num(lo, strict=False, hi=None):
    def ok(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            return False
        return (v > lo if strict else v >= lo) and (hi is None or v < hi)
    what = f"a number {'>' if strict else '>='} {lo}" + (f" and < {hi}" if hi else "")
    return ok, what


def _names(choices=None):
    def ok(v):
        return (isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v)
                and (choices is None or set(v) <= set(choices)))
    what = "a non-empty list of names" + (f" from {', '.join(choices)}" if choices else "")
    return ok, what


def _ints(lo):
    return (lambda v: isinstance(v, list) and len(v) > 0 and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= lo for x in v),
        f"a non-empty list of ints >= {lo}")


SCHEMA = {
    "kind": ((lambda v: v in KINDS), f"one of {', '.join(KINDS)}"),
    "backends": _names(), "archs": _names(), "datasets": _names(), "targets": _names(),
    "devices": _names(),
    "ops": _names(OPS),
    "variants": ((lambda v: _variant_choice(v) or (
        isinstance(v, dict) and bool(v) and all(_variant_choice(c) for c in v.values()))),
                 '"default", "all", a non-empty list of variant names, or a table of '
                 'backend = one of those'),
    "dims": _ints(1), "batches": _ints(1), "seeds": _ints(0), "hidden": _ints(1),
    "layers": _int(1), "bins": _int(2), "tail_bound": _num(0, strict=True),
    "steps": _int(1), "train_batch": _int(1), "lr": _num(0), "clip_norm": _num(0),
    "n_train": _int(0), "n_val": _int(0), "n_test": _int(0), "eval_every": _int(1),
    "patience": _int(0), "quality": ((lambda v: isinstance(v, bool)), "true or false"),
    "metric_n": _int(2), "null_draws": _int(1), "threads": _int(1), "jobs": _int(1),
    "timeout": _num(0, strict=True), "min_time": _num(0), "min_repeats": _int(1),
    "max_time": _num(0, strict=True), "description": ((lambda v: isinstance(v, str)),
                                                      "a string"),
    "image_levels": _int(1), "image_steps": _int(1), "image_hidden": _int(1),
    "logit_alpha": _num(0, hi=0.5), "data_path": ((lambda v: isinstance(v, str)), "a string"),
    "paired": ((lambda v: isinstance(v, bool)), "true or false"), "rounds": _int(2),
}


def _validate(table: dict, where: str) -> None:
    """Each field of ``table`` against SCHEMA; the first bad one is a MatrixError naming
    where it is, the field, what it must be and what it was."""
    for key, value in table.items():
        ok, what = SCHEMA[key]
        if not ok(value):
            hint = (f' (a list is written ["{value}"])' if isinstance(value, str)
                    and what.startswith("a non-empty list") else "")
            raise MatrixError(f"{where}: {key} must be {what}, got {value!r}{hint}")


def presets() -> dict[str, str]:
    """preset name -> its description."""
    return {p.stem: tomllib.loads(p.read_text()).get("description", "")
            for p in sorted(PRESET_DIR.glob("*.toml"))}


@dataclass
class Matrix:
    name: str
    source: str
    fields: dict
    sweeps: list[dict]
    # [cluster]: where the cells run (executor, scheduler, workers, jobqueue, retries and
    # dask-jobqueue's own options); the command line's flags win (benchmarks/cluster.py)
    cluster: dict = field(default_factory=dict)

    def sweep_fields(self):
        for sweep in self.sweeps or [{}]:
            yield {**self.fields, **sweep}


def load(name_or_path: str, overrides: dict | None = None) -> Matrix:
    """A preset by name, or a TOML file by path; ``overrides`` (from the command line)
    replace fields everywhere, sweeps included."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        raise MatrixError(f"{path}: matrices are TOML files (tomllib ships with Python); "
                          "write the same fields as benchmarks/matrices/*.toml")
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise MatrixError(f"unknown matrix preset {name_or_path!r}; presets: "
                              f"{', '.join(presets())}, or give a .toml file")
    elif not path.exists():
        raise MatrixError(f"matrix file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: not valid TOML: {exc}") from None
    sweeps = raw.pop("sweep", [])
    cluster = raw.pop("cluster", {})
    if not isinstance(cluster, dict):
        raise MatrixError(f"{path}: 'cluster' must be a table ([cluster])")
    if not isinstance(sweeps, list) or not all(isinstance(s, dict) for s in sweeps):
        raise MatrixError(f"{path}: 'sweep' must be an array of tables ([[sweep]])")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    tables = [(raw, str(path)), *((s, f"{path} [[sweep]] {i + 1}")
                                  for i, s in enumerate(sweeps)),
              (overrides, "the command line")]
    for table, where in tables:
        unknown = set(table) - set(DEFAULTS)
        if unknown:
            raise MatrixError(f"{where}: unknown matrix field(s) {sorted(unknown)}; known: "
                              f"{', '.join(DEFAULTS)}")
        _validate(table, where)
    fields = {**DEFAULTS, **raw, **overrides}
    sweeps = [{**s, **overrides} for s in sweeps]
    m = Matrix(name=path.stem, source=str(path), fields=fields, sweeps=sweeps,
               cluster=cluster)
    for f in m.sweep_fields():
        _check(f, path)
    return m


def _check(f: dict, path) -> None:
    """What the schema cannot see: names that must exist."""
    unknown = [b for b in backend_names(f["backends"]) if b not in adapters.names()]
    if unknown:
        raise MatrixError(f"{path}: unknown backend(s) {unknown}; known: "
                          f"{', '.join(adapters.names())} (a known backend that is not "
                          "installed is a skipped cell with the reason)")
    for d in f["devices"]:
        adapters.base.parse_device(d)  # DeviceError names the bad one
    for a in f["archs"]:
        if a not in IMAGE_ARCHS:
            adapters.FlowSpec(arch=a)  # UnknownArch names it
    if f["kind"] == "train":
        from flowbench import datasets
        for name in f["datasets"]:
            if name not in IMAGE_NAMES:
                datasets.density(name)  # DatasetError names it
    if f["kind"] == "vi":
        from flowbench.datasets import targets
        for name in f["targets"]:
            try:
                targets.load(name)
            except targets.TargetError as exc:
                raise MatrixError(f"{path}: {exc}") from None


def backend_names(requested) -> list[str]:
    return adapters.names() if list(requested) == ["all"] else list(requested)


def expand(m: Matrix, described: dict) -> list[Cell]:
    """Every cell of the matrix, in a stable order. ``described`` is what the describe
    step found: backend name -> {"variants": [...], "reason": None or why unavailable,
    "missing": {arch: reason}}. Cells that cannot run carry ``skip`` with the reason."""
    cells: dict[tuple, Cell] = {}
    rounds: dict[Cell, int] = {}  # comparison group -> rounds of its paired cells
    for f in m.sweep_fields():
        for b in backend_names(f["backends"]):
            info = described.get(b) or {"variants": [], "reason": f"unknown backend {b!r}; "
                                        f"known: {', '.join(adapters.names())}",
                                        "missing": {}}
            variants = _variants(f["variants"], info, b)
            for variant in variants:
                for arch in f["archs"]:
                    for device in f["devices"]:
                        for seed in f["seeds"]:
                            for data_or_dim in _data_or_dims(f):
                                cell = _cell(f, b, variant, arch, device, seed, data_or_dim)
                                if f["paired"]:
                                    rounds[_group_of(cell)] = f["rounds"]
                                same = cell.replace(batches=())  # a cell in two sweeps:
                                if same in cells:                # the union of its batches
                                    have = cells[same]
                                    cells[same] = have.replace(batches=sorted(
                                        set(have.batches) | set(cell.batches)))
                                    continue
                                why = info["reason"] or _image_skip(b, arch, cell) or (
                                    f"{b} does not offer {arch!r}: {info['missing'][arch]}"
                                    if arch in info["missing"] else None)
                                if variant not in info["variants"] and not why:
                                    why = (f"backend {b} has no execution variant "
                                           f"{variant!r}; it has: {', '.join(info['variants'])}")
                                cells[same] = cell.replace(skip=why)
    # the cells a table compares run one after another, each group where its first was,
    # its paired cells last
    return [c for group in comparison_groups(list(cells.values()))
            for c in group + paired_cells(group, rounds.get(_group_of(group[0])))]


def _group_of(cell: Cell) -> Cell:
    return cell.replace(backend="", variant="", batches=(), skip=None)


def comparison_groups(cells: list[Cell]) -> list[list[Cell]]:
    """The cells a table compares (one arch, spec, device and seed; every backend and
    variant), grouped in order of first appearance. On a machine whose speed drifts over
    minutes (a shared VM), two cells timed minutes apart differ by the drift as well as by
    their code, and two cells timed on two machines by the machines: paired cells
    (``paired_cells``) take that out of the ratio a table prints."""
    groups: dict[Cell, list[Cell]] = {}
    for c in cells:
        groups.setdefault(_group_of(c), []).append(c)
    return list(groups.values())


def paired_cells(group: list[Cell], rounds: int | None) -> list[Cell]:
    """One paired cell per framework whose matched backends and peers both have a cell
    that runs in the group (None: the group is not paired). Its members are those cells'
    backends and variants; it times on random input at the group's dimension (a train
    group's: its dataset's), the group's ops, batches and timing settings."""
    if not rounds:
        return []
    runnable = [c for c in group if c.skip is None and c.kind in ("time", "train")
                and c.dataset not in IMAGE_NAMES]
    out = []
    for fw in dict.fromkeys(adapters.framework(c.backend) for c in runnable):
        mine = [c for c in runnable if adapters.framework(c.backend) == fw]
        if {c.backend in adapters.MATCHED for c in mine} != {True, False}:
            continue
        first = mine[0]
        keep = {k: getattr(first, k) for k in ("arch", "device", "seed", "ops", "batches",
                                               "threads", "timeout", "jobs", "artifacts")
                + SPEC_FIELDS + TIMING_FIELDS}
        out.append(Cell(kind="paired", backend="+".join(c.backend for c in mine),
                        variant="+".join(c.variant for c in mine), dim=first.dim,
                        dataset=first.dataset if first.kind == "train" else None,
                        rounds=rounds, **keep).keyed())
    return out


def _data_or_dims(f: dict) -> list:
    """What a kind of cell ranges over: datasets (train), targets (vi) or dims (time)."""
    return {"train": f["datasets"], "vi": f["targets"]}.get(f["kind"], f["dims"])


def _variant_choice(v) -> bool:
    return v in ("default", "all") if isinstance(v, str) else _names()[0](v)


def _variants(requested, info, backend: str = "") -> list[str]:
    if isinstance(requested, dict):  # per backend; the others run their default
        requested = requested.get(backend, "default")
    have = info["variants"] or ["default"]
    if requested == "default":
        return have[:1]
    if requested == "all":
        return list(have)
    return list(requested)


def _cell(f, backend, variant, arch, device, seed, data_or_dim) -> Cell:
    fields = {"kind": f["kind"], "backend": backend, "variant": variant, "arch": arch,
              "device": device, "seed": seed, "ops": tuple(f["ops"]),
              "batches": tuple(sorted(f["batches"])), "threads": f["threads"],
              "timeout": float(f["timeout"]),
              **{k: f[k] for k in SPEC_FIELDS + TIMING_FIELDS}}
    fields["hidden"] = tuple(fields["hidden"])
    if f["kind"] == "vi":  # the target's name goes where a train cell's dataset goes
        fields.update(dataset=data_or_dim, **{k: f[k] for k in VI_FIELDS})
    elif f["kind"] == "train":
        fields.update(dataset=data_or_dim, **{k: f[k] for k in TRAIN_FIELDS})
        if data_or_dim in IMAGE_NAMES:
            fields.update({k: f[k] for k in IMAGE_FIELDS})
    else:
        fields.update(dim=data_or_dim)
    return Cell(**fields).keyed()


def _image_skip(backend: str, arch: str, cell: Cell) -> str | None:
    """Why a cell on an image dataset cannot run, or None."""
    if cell.dataset not in IMAGE_NAMES:
        return None
    if arch not in IMAGE_ARCHS:
        return (f"{arch!r} has no multi-scale image flow; image datasets take "
                f"{', '.join(IMAGE_ARCHS)}")
    if backend not in adapters.MATCHED:
        return (f"{backend} is a peer library: the multi-scale image flows are matched "
                f"in {', '.join(adapters.MATCHED)} only")
    return None


def shard(cells: list[Cell], spec: str | None) -> list[Cell]:
    """The i-th of N interleaved slices ("i/N", 1-based) of the comparison groups: every
    machine gets a similar mix of cheap and costly cells, the slices are disjoint and
    cover the matrix, and cells a table compares are measured on one machine."""
    if not spec:
        return cells
    try:
        i, n = (int(p) for p in spec.split("/"))
    except ValueError:
        raise MatrixError(f"--shard must be i/N with 1 <= i <= N, got {spec!r}") from None
    if not 1 <= i <= n:
        raise MatrixError(f"--shard must be i/N with 1 <= i <= N, got {spec!r}")
    return [c for group in comparison_groups(cells)[i - 1::n] for c in group]
