"""TensorFlow arrays and devices. TensorFlow is imported quietly, GPUs get memory growth
(TF must not take all GPU memory), and CPU thread pools follow FLOWBENCH_THREADS when it is
set before the first import (``benchmarks.environment.set_threads`` sets it)."""

from __future__ import annotations

import os

import numpy as np

from ..base import parse_device
from ..errors import DeviceError
from . import best_rate
from ..quiet import quiet_imports

with quiet_imports():
    import tensorflow as tf
    GPUS = tf.config.list_physical_devices("GPU")  # the CUDA probe prints on CPU hosts


def _configure_runtime():
    for gpu in GPUS:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by someone else: leave it
            pass
    threads = os.environ.get("FLOWBENCH_THREADS")
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:  # the runtime already started; its pools are fixed now
            pass


_configure_runtime()


class TFArrays:
    framework = "tensorflow"
    native_types = (tf.Tensor, tf.Variable)

    def devices(self):
        return ["cpu"] + [f"cuda:{i}" for i in range(len(GPUS))]

    def _resolve(self, device: str) -> str:
        kind, index = parse_device(device)
        if kind == "cpu":
            return "/CPU:0"
        if index >= len(GPUS):
            raise DeviceError(f"device {device!r} requested but TensorFlow {tf.__version__} "
                              f"sees {len(GPUS)} GPU(s) (tensorflow-cpu has no CUDA; the "
                              f"GPU machines here have no TensorFlow at all)")
        return f"/GPU:{index}"

    def to_numpy(self, a):
        if isinstance(a, (tf.Tensor, tf.Variable)):
            return a.numpy()
        return np.asarray(a)

    def to_native(self, a, device: str | None = None):
        with tf.device(self._resolve(device or "cpu")):
            if isinstance(a, (tf.Tensor, tf.Variable)):
                return tf.identity(tf.cast(a, tf.float32))
            return tf.convert_to_tensor(np.asarray(a, dtype=np.float32))

    def matmul_gflops(self, n: int = 2048, min_time: float = 1.0) -> float:
        """Best float32 GFLOP/s of an n x n matmul compiled by XLA through TensorFlow, on
        CPU, at the process's thread count."""
        with tf.device("/CPU:0"):
            a = tf.random.stateless_normal([n, n], [0, 1])
            b = tf.random.stateless_normal([n, n], [0, 2])
            mm = tf.function(tf.matmul, jit_compile=True)
            mm(a, b).numpy()
            return best_rate(lambda: mm(a, b).numpy(), 2 * n ** 3, min_time)

    def block(self, a):
        """Eager CPU kernels have finished when they return; GPU ones are queued, and one
        sync waits for all of them, whatever the nesting of the output."""
        if GPUS:
            tf.test.experimental.sync_devices()
        return a

    def native_check(self, a):
        dt = a.dtype
        kind = "f" if dt.is_floating else ("c" if dt.is_complex else "i")
        finite = bool(tf.reduce_all(tf.math.is_finite(a))) if kind == "f" else True
        return tuple(a.shape), kind, finite
