"""The ops table (``adapters/ops.py``) on PyTorch, for the image flows (NHWC state;
convolutions permute to torch's NCHW/OIHW and back) and NAF's transformer."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..ops import Ops


class TorchOps(Ops):
    device = "cpu"  # where const() puts its arrays; an image module sets its own

    def reshape(self, a, shape):
        return a.reshape(shape)

    def transpose(self, a, perm):
        return a.permute(perm)

    def concat(self, parts, axis):
        return torch.cat(parts, axis)

    def take(self, a, index):
        return a[index]

    def take_last(self, a, index):
        return a.gather(-1, index[..., None])[..., 0]

    def const(self, array):
        return torch.as_tensor(np.asarray(array, np.float32), device=self.device)

    ones_like = staticmethod(torch.ones_like)
    relu = staticmethod(torch.relu)
    tanh = staticmethod(torch.tanh)
    exp = staticmethod(torch.exp)
    sin = staticmethod(torch.sin)
    cos = staticmethod(torch.cos)
    sqrt = staticmethod(torch.sqrt)
    clip = staticmethod(torch.clamp)
    cumsum = staticmethod(torch.cumsum)
    softmax = staticmethod(torch.softmax)
    log = staticmethod(torch.log)
    abs = staticmethod(torch.abs)
    softplus = staticmethod(F.softplus)
    log_sigmoid = staticmethod(F.logsigmoid)
    where = staticmethod(torch.where)
    logsumexp = staticmethod(torch.logsumexp)
    log_softmax = staticmethod(torch.log_softmax)
    inv = staticmethod(torch.linalg.inv)

    def clamp_min(self, a, low):
        return a.clamp_min(low)

    def stop_gradient(self, a):
        return a.detach()

    def sum(self, a, axes):
        return a.sum(dim=axes)

    def any(self, a):
        return a.any()

    def all(self, a):
        return a.all()

    def mean_std(self, x):
        return x.mean((0, 1, 2)), x.std((0, 1, 2), unbiased=False)

    def conv2d(self, x, w, b):
        y = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, padding="same")
        return y.permute(0, 2, 3, 1)

    def until(self, step, state, limit):
        # eager Python: one host sync per step (the torch backend's compile variant
        # compiles the step, see adapters/torch/__init__.py); no_grad, so that compiled
        # steps see the same grad mode in training and in sampling
        with torch.no_grad():
            for _ in range(limit):
                *state, stop = step(*state)
                if bool(stop):
                    break
        return tuple(state)


OPS = TorchOps()
