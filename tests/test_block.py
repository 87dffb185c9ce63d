"""``block`` waits for every array of a nested op output, in every framework: on a GPU an
op that returns (x, logdet) is queued work, and a timer that waits only for a single
tensor stops at launch. Stand-in arrays record being waited for, so no GPU is needed."""

from __future__ import annotations

import pytest

from flowbench.adapters.native import leaves

from .conftest import load_or_skip


class StandIn:
    """An array on a (pretend) GPU that notes when something waits for it."""

    def __init__(self, device: str):
        self.device = device
        self.is_cuda = device.startswith("cuda")
        self.waited = 0

    def block_until_ready(self):
        self.waited += 1
        return self


def nested():
    a, b, c, d = StandIn("cuda:0"), StandIn("cuda:1"), StandIn("cuda:1"), StandIn("cpu")
    return (a, [b, {"logdet": c, "extra": (d, None)}]), (a, b, c, d)


def test_leaves_walks_tuples_lists_and_dicts():
    out, arrays = nested()
    assert list(leaves(out)) == list(arrays)
    assert list(leaves(None)) == [] and list(leaves(5)) == [5]


def test_torch_synchronises_every_cuda_device_of_a_nested_output(monkeypatch):
    torch_backend = load_or_skip("torch")
    import torch

    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    out, _ = nested()
    assert torch_backend.block(out) is out
    assert sorted(synced) == ["cuda:0", "cuda:1"]
    synced.clear()
    torch_backend.block((torch.zeros(2), torch.zeros(2)))  # CPU tensors: nothing to wait for
    assert synced == []


def test_jax_waits_for_every_array_of_a_nested_output():
    jax_backend = load_or_skip("jax")
    import jax.numpy as jnp

    out, arrays = nested()
    jax_backend.block(out)
    assert [a.waited for a in arrays] == [1, 1, 1, 1]
    real = (jnp.ones(3), {"logdet": jnp.zeros(3)})
    assert jax_backend.block(real) is not None


def test_tf_syncs_its_devices_once_for_a_nested_output_on_gpu(monkeypatch):
    load_or_skip("tfp")
    import tensorflow as tf

    from flowbench.adapters.native import tf as native_tf

    calls = []
    monkeypatch.setattr(tf.test.experimental, "sync_devices", lambda: calls.append(1))
    monkeypatch.setattr(native_tf, "GPUS", ["GPU:0"])
    out, _ = nested()
    assert native_tf.TFArrays().block(out) is out
    assert calls == [1]
    monkeypatch.setattr(native_tf, "GPUS", [])
    native_tf.TFArrays().block(out)
    assert calls == [1]


@pytest.mark.parametrize("name", ["torch", "jax", "tfp", "nflows", "flowjax", "tfp-keras"])
def test_every_backend_blocks_its_own_inverse_output(name):
    """Each backend's block takes what its ops return, a tuple included, and returns it."""
    import numpy as np

    from flowbench import adapters

    backend = load_or_skip(name)
    flow = backend.build(adapters.FlowSpec(arch="maf", dim=2, layers=1, hidden=(4,)))
    out = flow._inverse(backend.to_native(np.zeros((3, 2), np.float32), flow.device))
    assert backend.block(out) is out
