"""Steady-state time of each op (log_prob, inverse, forward, sample, train_step), CPU.

One class per op, so that a benchmark's setup compiles only the op it times: setup builds
the flow, makes x native on the flow's device and runs the op once (trace/compile, first-
call caches); the timed function is the flow's unchecked native op ended by block (no
input check, no host transfer). Params: backend x arch x dim (see _common for the grid and
the environment variables that narrow it).
"""

from . import _common as C


class _Op:
    params = (C.BACKENDS, C.ARCHS, C.DIMS)
    param_names = ["backend", "arch", "dim"]
    op = ""
    timeout = 120        # seconds for setup (framework import + compile) and the repeats
    rounds = 1           # one process per combination: setup (compile) dominates its cost
    repeat = (3, 10, 5.0)
    warmup_time = 0.1

    def setup(self, backend, arch, dim):
        self.backend = C.load_backend(backend)
        self.flow = C.build(self.backend, arch, dim)
        self.call = C.op_call(self.flow, C.native_x(self.backend, self.flow), self.op)
        C.first_call(self.backend, self.call)  # compile/first call outside the timed function

    def _run(self):
        self.backend.block(self.call())


class LogProb(_Op):
    op = "log_prob"

    def time_log_prob(self, backend, arch, dim):
        self._run()


class Inverse(_Op):
    op = "inverse"

    def time_inverse(self, backend, arch, dim):
        self._run()


class Forward(_Op):
    op = "forward"

    def time_forward(self, backend, arch, dim):
        self._run()


class Sample(_Op):
    op = "sample"

    def time_sample(self, backend, arch, dim):
        self._run()


class TrainStep(_Op):
    op = "train_step"

    def time_train_step(self, backend, arch, dim):
        self._run()
