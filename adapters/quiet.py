"""Keep TensorFlow off the user's terminal, and out of processes that do not need it.

TensorFlow (also pulled in by distrax through TFP) prints oneDNN and CUDA-stub notices from
C++ before absl logging is initialised, straight to file descriptor 2, so
TF_CPP_MIN_LOG_LEVEL cannot stop them. Imports that load it run inside ``quiet_imports``;
a Python exception raised by the import still propagates and prints as usual.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_imports():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def without_tensorflow():
    """Imports inside see TensorFlow as not installed (unless it is already loaded).

    TFP's JAX substrate, which distrax uses, imports TensorFlow only to copy docstrings and
    carries on without it; letting it load would put all of TensorFlow's native libraries
    (their own XLA, LLVM and absl) into every JAX process, cost seconds of import time, and
    print TensorFlow's start-up notices.

    TFP's numpy backend, imported on the way, remembers that TensorFlow was missing, and
    TFP-on-TensorFlow later refuses it ("Arg specs do not match"); so the copies imported
    here are dropped from sys.modules (the JAX substrate keeps its references) and a later
    TFP-on-TensorFlow import builds its own.
    """
    if "tensorflow" in sys.modules:
        yield
        return
    before = set(sys.modules)
    sys.modules["tensorflow"] = None  # the import system's marker for "not importable"
    try:
        yield
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
        stale = "tensorflow_probability.python.internal.backend.numpy"
        for name in set(sys.modules) - before:
            if name == stale or name.startswith(stale + "."):
                module = sys.modules.pop(name)
                parent, _, child = name.rpartition(".")
                # `from parent import child` would find the stale module as an attribute
                if getattr(sys.modules.get(parent), child, None) is module:
                    delattr(sys.modules[parent], child)
