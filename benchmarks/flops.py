"""Analytic FLOPs of the conditioner networks, and the machine's measured GEMM peak, so a
timing row can say how much of the machine an op used.

Only the conditioner networks are counted (2 * fan_in * fan_out per dense layer and row: a
MADE layer is a dense matmul with a masked weight, so its zeros are counted too; the image
flows' conv nets per output pixel). The transformers, bisection, log-dets and 1x1 maps
(Glow's 1x1 convolutions too) are left out: they are elementwise or O(dim^2) per row,
small beside the networks at the widths benchmarked, and counting them would need
per-library knowledge. So GFLOP/s here is a lower bound on work done.
"""

from __future__ import annotations

import numpy as np

from flowbench.adapters.native import best_rate
from flowbench.adapters.spec import Spec

# a training step: forward, then backward at about twice the forward's matmul work
TRAIN_FACTOR = 3


def flops_per_pass(spec: Spec) -> float:
    """FLOPs per row of one conditioner evaluation, averaged over the conditioned blocks
    (each spec counts its own networks: dense layers, or the image flows' conv nets)."""
    return spec.conditioner_flops()


def op_flops(spec: Spec, op: str, passes: int, batch: int) -> float:
    """Conditioner FLOPs of one call of ``op`` on ``batch`` rows that made ``passes``
    conditioner evaluations (as the flow counted them)."""
    return flops_per_pass(spec) * passes * batch * (
        TRAIN_FACTOR if op.startswith("train_step") else 1)


# the load check: a short numpy GEMM at the cell's thread count, beside the same check in
# the run's calibration; a cell whose check is below LOAD_RATIO of the calibration's was
# measured while something else used its CPUs
LOAD_CHECK_N = 512
LOAD_CHECK_TIME = 0.15
LOAD_RATIO = 0.7


def load_check() -> float:
    """GFLOP/s of the short numpy GEMM that tells a quiet machine from a loaded one."""
    return gemm_peak(LOAD_CHECK_N, LOAD_CHECK_TIME)


def memory_bandwidth(mbytes: int = 256, min_time: float = 0.5) -> float:
    """Best GB/s of copying a ``mbytes`` MB float32 array (a read and a write per byte):
    the roof for ops that move more than they compute."""
    a = np.ones(mbytes * 2 ** 20 // 4, np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    return best_rate(lambda: np.copyto(b, a), 2 * a.nbytes, min_time)  # G bytes/s


def gemm_peak(n: int = 2048, min_time: float = 1.0) -> float:
    """Best float32 GFLOP/s of an n x n matmul in numpy (the BLAS numpy links, with the
    thread count this process was started with)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool start, page faults
    return best_rate(lambda: a @ b, 2 * n ** 3, min_time)
