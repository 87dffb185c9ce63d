"""What training cells share: the data standardisation that keeps NLLs in data units."""

from __future__ import annotations

import numpy as np


class Standardizer:
    """x' = (x - mean) / std fitted on the training split; the flow models x', and
    log p(x) = log p'(x') - sum(log std) exactly, so NLLs stay in the data's units."""

    def __init__(self, train: np.ndarray):
        self.mean = train.mean(0)
        self.std = train.std(0)
        self.log_jac = float(np.log(self.std).sum())

    def __call__(self, x):
        return ((x - self.mean) / self.std).astype(np.float32)
