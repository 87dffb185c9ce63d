"""Array handling per framework (numpy <-> native, devices, blocking, input checks),
shared by the matched backend and the peer backends of that framework. Each module
imports its framework at import time; import it only from a backend that needs it."""


def leaves(a):
    """Every array of a nested op output (tuples, lists, dict values), depth first: an op
    returns (x, logdet), a peer may return more, and every one of them must be waited
    for before a clock stops."""
    if isinstance(a, (tuple, list)):
        for item in a:
            yield from leaves(item)
    elif isinstance(a, dict):
        for item in a.values():
            yield from leaves(item)
    elif a is not None:
        yield a
