"""Adapters: one Flow protocol over PyTorch, JAX and TFP implementations.

    from flowbench import adapters
    backend = adapters.load("torch")
    flow = backend.build(adapters.FlowSpec(arch="maf", dim=2), seed=0)

Frameworks are imported only inside their backend subpackage, on ``load``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import NamedTuple

from .base import Backend, Flow, TrainConfig
from .errors import (BackendUnavailable, DeviceError, DTypeError, FlowbenchError,
                     InvalidInput, NonFiniteError, ShapeError, SpecError, UnknownArch,
                     UnsupportedOp, UnsupportedSpec)
from .spec import ARCHS, ONE_WAY_PRESETS, PRESET_DOCS, PRESETS, FlowSpec


class Entry(NamedTuple):
    """A backend of the registry."""
    path: str                 # "module:BackendClass", imported on load
    needs: tuple[str, ...]    # the framework modules it imports
    hint: str                 # how to install them


MATCHED: dict[str, Entry] = {
    "torch": Entry("flowbench.adapters.torch:TorchBackend", ("torch",),
                   "pip install 'flowbench[torch]'"),
    "jax": Entry("flowbench.adapters.jax:JaxBackend", ("jax", "distrax", "optax"),
                 "pip install 'flowbench[jax]'"),
    "tfp": Entry("flowbench.adapters.tfp:TfpBackend",
                 ("tensorflow", "tensorflow_probability", "keras"),
                 "pip install 'flowbench[tfp]'"),
}
# third-party flow libraries as they ship (adapters/peers)
PEERS: dict[str, Entry] = {
    "normflows": Entry("flowbench.adapters.peers.normflows:NormflowsBackend",
                       ("torch", "normflows"),
                       "pip install 'flowbench[torch,peers]'"),
    "zuko": Entry("flowbench.adapters.peers.zuko:ZukoBackend", ("torch", "zuko"),
                  "pip install 'flowbench[torch,peers]'"),
    "nflows": Entry("flowbench.adapters.peers.nflows:NflowsBackend", ("torch", "nflows"),
                    "pip install 'flowbench[torch,peers]'"),
    "flowjax": Entry("flowbench.adapters.peers.flowjax:FlowjaxBackend",
                     ("jax", "flowjax", "equinox", "optax"),
                     "pip install 'flowbench[jax,peers]'"),
    "tfp-keras": Entry("flowbench.adapters.peers.tfp_keras:TfpKerasBackend",
                       ("tensorflow", "tensorflow_probability", "tf_keras"),
                       "pip install 'flowbench[tfp]'"),
    "tfp-jax": Entry("flowbench.adapters.peers.tfp_jax:TfpJaxBackend",
                     ("jax", "tensorflow_probability", "equinox", "optax"),
                     "pip install 'flowbench[jax]'"),
}
REGISTRY = {**MATCHED, **PEERS}

_loaded: dict[str, Backend] = {}  # the one instance of each backend class


def names() -> list[str]:
    return list(REGISTRY)


def _reason(name: str) -> str | None:
    """None when the backend can load, else why not."""
    if name not in REGISTRY:
        return f"unknown backend {name!r}; known: {', '.join(REGISTRY)}"
    entry = REGISTRY[name]
    for mod in entry.needs:
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed: {entry.hint}"
    return None


def framework(name: str) -> str:
    """The framework a backend runs on (the first module its registry entry needs); "?"
    for a name the registry does not hold."""
    entry = REGISTRY.get(name)
    return entry.needs[0] if entry else "?"


def loaded() -> list[str]:
    """Backends this process has loaded so far."""
    return list(_loaded)


def available() -> dict[str, str | None]:
    """backend name -> None if it can be loaded, else the reason it cannot."""
    return {name: _reason(name) for name in REGISTRY}


def load(name: str) -> Backend:
    """The backend object (one per process); raises BackendUnavailable with a hint when it
    cannot load."""
    if name in _loaded:
        return _loaded[name]
    reason = _reason(name)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} unavailable: {reason}")
    module, _, cls = REGISTRY[name].path.partition(":")
    try:
        backend = getattr(importlib.import_module(module), cls)()
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} unavailable: {exc}; "
                                 f"{REGISTRY[name].hint}") from exc
    _loaded[name] = backend
    return backend


__all__ = [
    "ARCHS", "ONE_WAY_PRESETS", "PRESETS", "PRESET_DOCS", "Backend", "BackendUnavailable",
    "DTypeError", "DeviceError", "Entry", "Flow", "FlowSpec", "FlowbenchError", "InvalidInput",
    "NonFiniteError", "MATCHED", "PEERS", "ShapeError", "SpecError", "TrainConfig", "UnknownArch",
    "UnsupportedOp", "UnsupportedSpec", "available", "framework", "load", "loaded", "names",
]
