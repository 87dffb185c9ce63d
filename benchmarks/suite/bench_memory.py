"""Peak resident memory of building a flow and one log_prob on a batch.

asv's peakmem_ is the peak RSS of the whole benchmark process, so the framework imported
in setup (and its allocator pools) is part of every number; what changes between
combinations and commits is the flow's parameters, its compiled function and the
activations of one log_prob.
"""

import numpy as np

from . import _common as C


class PeakMem:
    params = (C.BACKENDS, C.ARCHS, C.DIMS)
    param_names = ["backend", "arch", "dim"]
    timeout = 120
    rounds = 1

    def setup(self, backend, arch, dim):
        self.backend = C.load_backend(backend)
        C.check_offered(self.backend, arch, dim)  # skip without building
        self.x = np.random.default_rng(C.SEED).standard_normal(
            (C.BATCH, int(dim))).astype(np.float32)

    def peakmem_build_log_prob(self, backend, arch, dim):
        flow = self.backend.build(C.spec(arch, dim), seed=C.SEED)
        self.backend.block(flow.log_prob(self.x))
