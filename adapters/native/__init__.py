"""Array handling per framework (numpy <-> native, devices, blocking, input checks),
shared by the matched backend and the peer backends of that framework. Each module
imports its framework at import time; import it only from a backend that needs it."""


def best_rate(run, flops: float, min_time: float) -> float:
    """Best rate, in G per second, of ``run()`` doing ``flops`` units of work (already
    warmed up, and blocking), over ``min_time`` seconds."""
    import time

    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


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
