"""PyTorch arrays and devices."""

from __future__ import annotations

import numpy as np
import torch

from ..base import parse_device
from ..errors import DeviceError
from ..work import Work
from . import best_rate, leaves


def counted_work(run, block) -> Work:
    """Matmul and convolution FLOPs of one call of run, by FlopCounterMode (the dispatcher
    sees every kernel the call launches)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        block(run())
    return Work(float(counter.get_total_flops()), "torch-flop-counter")


class TorchArrays:
    framework = "torch"
    native_types = (torch.Tensor,)

    def version(self):
        return torch.__version__

    def devices(self):
        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    def _resolve(self, device: str) -> str:
        kind, index = parse_device(device)
        if kind == "cpu":
            return "cpu"
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} requested but torch sees "
                              f"{torch.cuda.device_count()} CUDA GPU(s) (torch "
                              f"{torch.__version__}, built for CUDA {torch.version.cuda})")
        return f"cuda:{index}"

    def to_numpy(self, a):
        if isinstance(a, torch.Tensor):
            return a.detach().cpu().numpy()
        return np.asarray(a)

    def to_native(self, a, device: str | None = None):
        device = self._resolve(device or "cpu")
        if isinstance(a, torch.Tensor):
            return a.to(device=device, dtype=torch.float32)
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

    def block(self, a):
        """Wait for every CUDA device that holds an array of the (nested) output."""
        for device in {t.device for t in leaves(a) if getattr(t, "is_cuda", False)}:
            torch.cuda.synchronize(device)
        return a

    def matmul_gflops(self, n: int = 2048, min_time: float = 1.0) -> float:
        """Best float32 GFLOP/s of torch's own n x n matmul on CPU (oneDNN/MKL), at the
        process's thread count: a peak the torch backends can be held to."""
        g = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=g) for _ in range(2))
        torch.matmul(a, b)
        return best_rate(lambda: torch.matmul(a, b), 2 * n ** 3, min_time)

    def native_check(self, a):
        if a.is_floating_point():
            return tuple(a.shape), "f", bool(torch.isfinite(a).all())
        return tuple(a.shape), ("c" if a.is_complex() else "i"), True
