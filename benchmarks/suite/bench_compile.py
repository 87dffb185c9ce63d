"""First-call (trace + compile) seconds of log_prob and sample on a fresh flow.

Measured in setup (asv times nothing here): load the backend, build a fresh flow, make x
native, then time the op's first call, blocked. It includes what the first call of a new
flow pays in this process: tracing and compilation for jitted backends (jax.jit,
tf.function/XLA), lazy initialisation for eager ones. Each combination runs in a fresh
process, so no compiled function is reused from another combination.
"""

from . import _common as C


class CompileTime:
    params = (C.BACKENDS, C.ARCHS, C.DIMS, ["log_prob", "sample"])
    param_names = ["backend", "arch", "dim", "op"]
    unit = "seconds"
    timeout = 120
    rounds = 1

    def setup(self, backend, arch, dim, op):
        self.backend = C.load_backend(backend)
        flow = C.build(self.backend, arch, dim)
        call = C.op_call(flow, C.native_x(self.backend, flow), op)
        self.seconds = C.first_call(self.backend, call)

    def track_compile_time(self, backend, arch, dim, op):
        return self.seconds
