"""Peer backends: third-party flow libraries as they ship, behind the same Flow protocol.

The matched backends answer "PyTorch, JAX or TensorFlow?"; peers answer "normflows, zuko
or nflows? FlowJAX or distrax? TFP on TF or on JAX?". Each peer builds, from a FlowSpec,
the closest flow its library ships (same layers, widths, bins and tail bound wherever the
library takes them) and *declares* what it offers and how that differs from the canonical
model (``Offer``); ``flowbench conventions`` turns the declarations into a table. Peers
map the library's direction naming onto the protocol's: ``forward``/``sample`` is z -> x,
``inverse``/``log_prob`` is x -> z. They have no canonical weights.

One module per library, imported only when its backend loads.
"""
