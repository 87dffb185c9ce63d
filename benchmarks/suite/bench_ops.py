"""Time the density and sampling ops of each arch (torch backend, CPU, dim 2 and 8)."""

import numpy as np

import adapters


class Ops:
    params = (list(adapters.PRESETS), [2, 8])
    param_names = ["arch", "dim"]
    timeout = 120

    def setup(self, arch, dim):
        self.backend = adapters.load("torch")
        self.flow = self.backend.build(adapters.FlowSpec(arch=arch, dim=dim, layers=5,
                                                         hidden=(128, 128)), seed=0)
        x = np.random.default_rng(0).standard_normal((1024, dim)).astype(np.float32)
        self.x = self.backend.to_native(x)
        self.flow._log_prob(self.x)  # first call outside the timed function

    def time_log_prob(self, arch, dim):
        self.backend.block(self.flow._log_prob(self.x))

    def time_sample(self, arch, dim):
        self.backend.block(self.flow._sample(1024, 0))
