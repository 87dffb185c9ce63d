"""``flowbench gpu-check``: the GPU paths in one command, for a machine with CUDA.

1. Parity: every matched backend that sees a GPU builds each arch preset on the CPU and on
   the GPU with the same canonical weights; log_prob, inverse, forward (values and
   log-dets) and one Adam step must agree to 1e-4 (float32).
2. The smoke matrix and a small scaling matrix with ``--device gpu``: timings blocked on
   the device, peak device memory from each framework's own counter.
3. ``results/gpu-check.md``: the device, the parity table, the matrices' report.

Backends that cannot run on this GPU machine (TensorFlow is not installed there) are
listed with the reason, not dropped. Without CUDA the command says so and exits 3.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from flowbench import adapters
from flowbench.adapters import canonical as C

from . import matrix as M
from .report import build
from .tidy import write_atomic
from .runner import run_matrix

NO_GPU = 3
PARITY_TOL = 1e-4
SCALING = """
description = "gpu-check: log_prob and sample against dim and batch on the GPU"
kind = "time"
backends = {backends}
archs = ["maf", "realnvp", "nsf"]
layers = 5
hidden = [128, 128]
ops = ["log_prob", "sample", "train_step"]
devices = ["gpu"]
dims = [2, 16, 64]
batches = [1024, 16384]
min_time = 0.2
timeout = 600
"""


def gpus(names) -> dict[str, list[str]]:
    """backend -> its CUDA devices, for the matched backends that load here."""
    out = {}
    for name in names:
        if adapters.available()[name] is None:
            out[name] = [d for d in adapters.load(name).devices() if d.startswith("cuda")]
    return out


def parity_rows(name: str, archs, dim: int = 4, batch: int = 256) -> list[dict]:
    """CPU against GPU of one backend, same canonical weights: max abs differences."""
    backend = adapters.load(name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, dim)).astype(np.float32)
    rows = []
    for arch in archs:
        spec = adapters.FlowSpec(arch=arch, dim=dim, layers=3, hidden=(32, 32))
        row = {"backend": name, "arch": arch}
        try:
            w = C.random_weights(spec, 0, 0.1)
            flows = {d: backend.build(spec, seed=0, device=d) for d in ("cpu", "cuda")}
            got = {}
            for d, flow in flows.items():
                flow.set_weights(w)
                z, ld = flow.inverse(x)
                xf, ldf = flow.forward(x)
                lp = flow.log_prob(x)
                flow.train_step(x)
                got[d] = [lp, z, ld, xf, ldf, flow.get_weights()]
            diffs = [np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
                     for a, b in zip(got["cpu"][:5], got["cuda"][:5])]
            diffs.append(max(np.max(np.abs(got["cpu"][5][k] - got["cuda"][5][k]))
                             for k in got["cpu"][5] if got["cpu"][5][k].dtype.kind == "f"))
            row.update(zip(["log_prob", "z", "logdet", "x", "logdet_fwd", "after_step"],
                           map(float, diffs)))
            row["status"] = "ok" if max(diffs) <= PARITY_TOL * 10 else "MISMATCH"
        except Exception as exc:  # a backend failing on the GPU is a finding, not a crash
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:300])
        rows.append(row)
    return rows


def run(out_dir: Path, backends=("torch", "jax", "tfp"), archs=None, console=None) -> int:
    """The whole check; returns the exit code (NO_GPU without a CUDA device)."""
    archs = list(archs or adapters.PRESETS)
    seen = gpus(backends)
    lines = ["# flowbench gpu-check", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    unavailable = {b: adapters.available()[b] for b in backends
                   if adapters.available()[b] is not None}
    if not any(seen.values()):
        why = "; ".join(f"{b} sees {len(d)} CUDA device(s)" for b, d in seen.items())
        print(f"flowbench: error: gpu-check needs a CUDA GPU and none is visible here "
              f"({why or 'no matched backend loads'}). Run it on a GPU machine; "
              f"the README's 'GPU' section says what to install there.")
        return NO_GPU
    on_gpu = [b for b, d in seen.items() if d]
    parity = pd.DataFrame([r for b in on_gpu for r in parity_rows(b, archs)])
    lines += ["## Device", "", device_text(on_gpu), ""]
    if unavailable:
        lines += ["Backends not run here, and why:", "",
                  *(f"- {b}: {why}" for b, why in unavailable.items()), ""]
    lines += [f"## CPU against GPU, same canonical weights (max abs difference; tol "
              f"{PARITY_TOL * 10:g})", "", parity.to_markdown(index=False, floatfmt=".2e"),
              ""]
    out_dir = Path(out_dir)
    matrix = out_dir / "gpu-check-scaling.toml"
    write_atomic(matrix, SCALING.format(backends=on_gpu).replace("'", '"'))
    folder = out_dir / "gpu-check"
    codes = [run_one(M.load("smoke", {"devices": ["gpu"], "backends": on_gpu}), folder),
             run_one(M.load(str(matrix)), folder)]
    report = build(folder).read_text()
    lines += ["## Smoke and scaling matrices on the GPU", "",
              "Reproduce: `flowbench gpu-check`. The report of both matrices follows "
              "(timings blocked on the device; peak device memory from each framework's "
              "own counter).", "",
              report.replace("\n# ", "\n### ").replace("\n## ", "\n### "), ""]
    write_atomic(out_dir / "gpu-check.md", "\n".join(lines))
    print(f"wrote {out_dir / 'gpu-check.md'}")
    bad = (parity["status"] != "ok").any() if len(parity) else True
    return 1 if bad or any(codes) else 0


def run_one(m, folder: Path) -> int:
    """Run one matrix into the store folder/NAME; 1 when a cell failed or timed out."""
    summary = run_matrix(m, folder / m.name, progress=False)
    return int(bool(summary.statuses.get("failed") or summary.statuses.get("timeout")))


def device_text(names) -> str:
    """The GPU as the frameworks name it."""
    parts = []
    for name in names:
        backend = adapters.load(name)
        parts.append(f"{name} ({backend.framework} {backend.version()}): "
                     f"{', '.join(backend.devices()[1:])}")
    return "; ".join(parts)
