"""TensorFlow arrays and devices. TensorFlow is imported quietly, GPUs get memory growth
(TF must not take all GPU memory), and CPU thread pools follow FLOWBENCH_THREADS when it is
set before the first import (``benchmarks.environment.set_threads`` sets it)."""

from __future__ import annotations

import os

import numpy as np

from ..base import parse_device
from ..errors import DeviceError
from ..work import Work, hlo_flops
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
        """Best float32 GFLOP/s of an n x n matmul on CPU at the process's thread count,
        the better of TensorFlow's two: XLA's (the ``xla`` variant) and TF's own kernel
        (what ``function`` and ``eager`` run; 211 against XLA's 202 GFLOP/s on a 2-core
        Zen 4, where the roofline's ``function`` cells reached 208)."""
        with tf.device("/CPU:0"):
            a = tf.random.stateless_normal([n, n], [0, 1])
            b = tf.random.stateless_normal([n, n], [0, 2])
            rates = []
            for mm in (tf.function(tf.matmul, jit_compile=True), tf.function(tf.matmul)):
                mm(a, b).numpy()
                rates.append(best_rate(lambda mm=mm: mm(a, b).numpy(), 2 * n ** 3, min_time))
            return max(rates)

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


_KERNELS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "Conv3D",
            "DepthwiseConv2dNative")


def _nodes(graph_def) -> list:
    """The nodes of a graph and of every function in its library (loop and branch bodies)."""
    return list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]


def _kernels(graph_def) -> int:
    return sum(n.op in _KERNELS for n in _nodes(graph_def))


def function_work(function, args, variant: str, analytic: float) -> Work:
    """What one call of a TF op executes, by variant: ``eager`` runs every call the counter
    saw (the analytic count); ``xla`` runs the optimized HLO; ``function`` runs the graph
    grappler optimized, which drops repeated conditioner evaluations (TFP's log-det one):
    the analytic count scaled by the share of matmul and convolution nodes grappler keeps."""
    if variant == "eager":
        return Work(analytic, "eager-count")
    if variant == "xla":
        return hlo_flops(function.experimental_get_compiler_ir(*args)(stage="optimized_hlo"))
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer

    concrete = function.get_concrete_function(*args)
    traced = concrete.graph.as_graph_def()
    meta = tf.compat.v1.train.export_meta_graph(graph_def=traced, graph=concrete.graph)
    fetch = meta_graph_pb2.CollectionDef()
    fetch.node_list.value.extend(t.name for t in concrete.outputs)
    meta.collection_def["train_op"].CopyFrom(fetch)  # grappler keeps what this names
    optimized = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)
    before, after = _kernels(traced), _kernels(optimized)
    if _loops(traced):  # a node in a loop body runs once per trip: counts cannot weigh it
        return Work(analytic, "tf-graph",
                    f"graph with a while loop: analytic count kept (grappler left {after} of "
                    f"{before} matmul nodes, not weighted by trips)")
    share = after / before if before else 1.0
    return Work(analytic * share, "tf-grappler",
                f"analytic count x {after}/{before} matmul nodes kept by grappler")


def _loops(graph_def) -> bool:
    return any(n.op in ("While", "StatelessWhile") for n in _nodes(graph_def))
