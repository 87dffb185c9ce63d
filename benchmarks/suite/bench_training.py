"""Test NLL (nats, data units) of each backend x arch after a fixed short training on Eq. 39.

Training runs in setup: 200 Adam steps (lr 1e-3, batch 256) on standardized data, seed 0;
the number asv tracks is the mean negative log-likelihood of the held-out test split in
the data's units, NLL = -(log p'(std(x)) - sum(log std)). A regression in a backend's
density, its gradients or its optimiser shows up here as a jump, long before anything
diverges. Eq. 39 is 2-D, so this benchmark has no dim parameter.
"""

import numpy as np

from . import _common as C

STEPS = 200
N_TRAIN = 5_000
N_TEST = 2_000


class Training:
    params = (C.BACKENDS, C.ARCHS)
    param_names = ["backend", "arch"]
    unit = "nats"
    timeout = 300
    rounds = 1

    def setup(self, backend, arch):
        from flowbench import datasets
        try:
            from flowbench.benchmarks.training import Standardizer
        except ImportError as exc:  # a commit from before it (asv run over history)
            raise NotImplementedError(f"no benchmarks.training here: {exc}") from exc

        be = C.load_backend(backend)
        ds = datasets.load("eq39", n_train=N_TRAIN, n_val=0, n_test=N_TEST, seed=C.SEED)
        standardize = Standardizer(ds.train)

        flow = C.build(be, arch, ds.dim)
        train = standardize(ds.train)
        rng = np.random.default_rng(C.SEED)
        for step in range(STEPS):
            loss = flow.train_step(train[rng.integers(0, len(train), C.BATCH)])
            if not np.isfinite(loss):
                raise FloatingPointError(f"training diverged at step {step}: loss {loss}")
        log_prob = be.to_numpy(flow.log_prob(standardize(ds.test))) - standardize.log_jac
        self.nll = float(-np.mean(log_prob))

    def track_test_nll(self, backend, arch):
        return self.nll
