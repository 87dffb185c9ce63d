"""Keras' Adam with epsilon where torch.optim.Adam and optax.adam put it.

Keras adds epsilon to sqrt(v) before bias correction (the "epsilon hat" of Kingma & Ba),
which is the others' epsilon scaled by sqrt(1 - beta2^t): at step 1 with the default
1e-8 that is 3e-7, enough to change the first updates of parameters with gradients below
~1e-5 and, measured, to move one step's loss change by 2e-3 relative on a spline flow.
Matched backends must train the same way, so only ``update_step`` is replaced; state,
clipping and the rest stay Keras'.
"""

from __future__ import annotations

import keras
from keras import ops


class Adam(keras.optimizers.Adam):
    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        b1, b2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(g, m), 1 - b1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(g), v), 1 - b2))
        m_hat = ops.divide(m, 1 - ops.power(b1, step))
        v_hat = ops.divide(v, 1 - ops.power(b2, step))
        self.assign_sub(variable, ops.divide(ops.multiply(lr, m_hat),
                                             ops.add(ops.sqrt(v_hat), self.epsilon)))
