"""JAX arrays and devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..base import parse_device
from ..errors import DeviceError
from ..work import Work, hlo_flops
from . import best_rate


def compiled_work(jitted, *args) -> Work:
    """Matmul and convolution FLOPs of one execution of jitted(*args) as XLA compiled it
    (``jax.jit`` or ``equinox.filter_jit``, whose compiled object wraps jax's)."""
    compiled = jitted.lower(*args).compile()
    compiled = getattr(compiled, "compiled", compiled)
    return hlo_flops(compiled.as_text())


def _gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


class JaxArrays:
    framework = "jax"
    native_types = (jax.Array,)

    def version(self):
        return jax.__version__

    def devices(self):
        return ["cpu"] + [f"cuda:{i}" for i in range(len(_gpus()))]

    def _resolve(self, device: str):
        kind, index = parse_device(device)
        if kind == "cpu":
            return jax.devices("cpu")[0]
        gpus = _gpus()
        if index >= len(gpus):
            raise DeviceError(f"device {device!r} requested but jax {jax.__version__} sees "
                              f"{len(gpus)} GPU(s) (install jax[cuda12] on a GPU machine)")
        return gpus[index]

    def to_numpy(self, a):
        return np.asarray(a)

    def to_native(self, a, device: str | None = None):
        dev = self._resolve(device or "cpu")
        if isinstance(a, jax.Array):
            return jax.device_put(a.astype(jnp.float32), dev)
        return jax.device_put(np.asarray(a, dtype=np.float32), dev)

    def matmul_gflops(self, n: int = 2048, min_time: float = 1.0) -> float:
        """Best float32 GFLOP/s of a jitted n x n matmul on CPU (XLA's), at the process's
        thread count."""
        key_a, key_b = jax.random.split(jax.random.key(0))
        a = jax.random.normal(key_a, (n, n), jnp.float32)
        b = jax.random.normal(key_b, (n, n), jnp.float32)
        mm = jax.jit(jnp.matmul)
        mm(a, b).block_until_ready()
        return best_rate(lambda: mm(a, b).block_until_ready(), 2 * n ** 3, min_time)

    def block(self, a):
        """jax.block_until_ready walks the output's pytree: every array is waited for."""
        return jax.block_until_ready(a)

    def native_check(self, a):
        kind = np.dtype(a.dtype).kind
        finite = bool(jnp.isfinite(a).all()) if kind == "f" else True
        return tuple(a.shape), kind, finite
