"""One cell of a benchmark matrix, typed: what one fresh subprocess measures.

The matrix expansion makes cells, the runner schedules them, the worker and the training
code read them; all through these fields. A cell's key is a hash of the fields that
define it (``Cell.defining``), so a rerun knows which cells a results file already holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cell:
    """Args:
        kind: "time" (ops timed on random input), "train" (trained on ``dataset``,
            then evaluated and timed on its test split), "vi" (trained by reverse KL on
            the target named in ``dataset``, then evaluated on its own draws and timed)
            or "paired" (one framework's backends, joined by "+" in ``backend`` and
            ``variant``, timed on random input in interleaved rounds:
            ``benchmarks/paired.py``).
        backend, variant, arch, device, seed: what is built, where, from which seed.
        ops, batches: the ops timed and the batch sizes each op is timed at.
        threads: CPU threads every framework of the cell's process gets.
        layers, hidden, bins, tail_bound: the spec besides ``arch`` and the dimension.
        min_time, min_repeats, max_time: the timing loop (``benchmarks.timing.measure``).
        dim: the dimension of a timing cell (a train cell takes its dataset's).
        dataset ... null_draws: training and evaluation settings of a train cell.
        image_levels ... data_path: the multi-scale image flow and data of an image cell.
        rounds: the interleaved rounds of a paired cell.
        skip: why the cell cannot run (a skipped row), or None.
        key: the hash of the defining fields, set by ``keyed``.
        artifacts, jobs, timeout: where pictures go, how many cells run side by side and
            the seconds the cell may take (its sweep's); run settings, not in the key.
    """

    kind: str
    backend: str
    variant: str
    arch: str
    device: str
    seed: int
    ops: tuple[str, ...]
    batches: tuple[int, ...]
    threads: int
    layers: int
    hidden: tuple[int, ...]
    bins: int
    tail_bound: float
    min_time: float
    min_repeats: int
    max_time: float
    dim: int | None = None
    # train cells
    dataset: str | None = None
    steps: int | None = None
    train_batch: int | None = None
    lr: float | None = None
    clip_norm: float | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    eval_every: int | None = None
    patience: int | None = None
    quality: bool | None = None
    metric_n: int | None = None
    null_draws: int | None = None
    # image cells
    image_levels: int | None = None
    image_steps: int | None = None
    image_hidden: int | None = None
    logit_alpha: float | None = None
    data_path: str | None = None
    # paired cells
    rounds: int | None = None
    # not part of the key
    skip: str | None = field(default=None, compare=False)
    key: str = field(default="", compare=False)
    artifacts: str = field(default="", compare=False)
    jobs: int = field(default=1, compare=False)
    timeout: float = field(default=600.0, compare=False)

    RUN_FIELDS = ("skip", "key", "artifacts", "jobs", "timeout")

    def defining(self) -> dict:
        """The fields that define the cell, as JSON-ready values; optional groups that do
        not apply (training settings of a timing cell) are left out, not null."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.RUN_FIELDS or (value is None and f.default is None):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def keyed(self) -> "Cell":
        digest = hashlib.sha1(json.dumps(self.defining(), sort_keys=True).encode())
        return dataclasses.replace(self, key=digest.hexdigest()[:16])

    def replace(self, **changes) -> "Cell":
        """A copy with ``changes`` (tuples for sequence fields), key recomputed."""
        for name in ("ops", "batches", "hidden"):
            if name in changes:
                changes[name] = tuple(changes[name])
        return dataclasses.replace(self, **changes).keyed()

    def to_json(self) -> str:
        return json.dumps({**self.defining(), **{k: getattr(self, k)
                                                 for k in self.RUN_FIELDS}})

    @classmethod
    def from_json(cls, text: str) -> "Cell":
        raw = json.loads(text)
        for name in ("ops", "batches", "hidden"):
            raw[name] = tuple(raw[name])
        return cls(**raw)

    @property
    def is_train(self) -> bool:
        return self.kind == "train"

    @property
    def name(self) -> str:
        """What a person reads in the progress bar: backend/variant arch data device."""
        where = self.dataset or f"dim {self.dim}"
        return f"{self.backend}/{self.variant} {self.arch} {where} {self.device}"
