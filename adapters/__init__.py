"""Adapters: one Flow protocol over PyTorch, JAX and TFP implementations.

    import adapters
    backend = adapters.load("torch")
    flow = backend.build(adapters.FlowSpec(arch="maf", dim=2), seed=0)

Frameworks are imported only inside their backend subpackage, on ``load``.
"""

from __future__ import annotations

import importlib
import importlib.util

from .base import Backend, Flow, TrainConfig
from .errors import (BackendUnavailable, DeviceError, DTypeError, FlowbenchError,
                     InvalidInput, NonFiniteError, ShapeError, SpecError, UnknownArch,
                     UnsupportedOp, UnsupportedSpec)
from .spec import ARCHS, PRESET_DOCS, PRESETS, FlowSpec

# name -> (module, framework modules it needs, install hint)
MATCHED: dict[str, tuple[str | None, tuple[str, ...], str]] = {
    "torch": ("adapters.torch", ("torch",), "pip install 'flowbench[torch]'"),
    "jax": ("adapters.jax", ("jax", "distrax", "optax"), "pip install 'flowbench[jax]'"),
    "tfp": ("adapters.tfp", ("tensorflow", "tensorflow_probability", "keras"),
            "pip install 'flowbench[tfp]'"),
}
# third-party flow libraries as they ship (adapters/peers)
PEERS: dict[str, tuple[str | None, tuple[str, ...], str]] = {
    "normflows": ("adapters.peers.normflows", ("torch", "normflows"),
                  "pip install 'flowbench[torch,peers]'"),
    "zuko": ("adapters.peers.zuko", ("torch", "zuko"), "pip install 'flowbench[torch,peers]'"),
    "nflows": ("adapters.peers.nflows", ("torch", "nflows"),
               "pip install 'flowbench[torch,peers]'"),
    "flowjax": ("adapters.peers.flowjax", ("jax", "flowjax", "equinox", "optax"),
                "pip install 'flowbench[jax,peers]'"),
    "tfp-keras": ("adapters.peers.tfp_keras", ("tensorflow", "tensorflow_probability",
                                               "tf_keras"), "pip install 'flowbench[tfp]'"),
    "tfp-jax": ("adapters.peers.tfp_jax", ("jax", "tensorflow_probability", "equinox",
                                           "optax"), "pip install 'flowbench[jax]'"),
}
REGISTRY = {**MATCHED, **PEERS}

_loaded: dict[str, Backend] = {}


def names() -> list[str]:
    return list(REGISTRY)


def _reason(name: str) -> str | None:
    """None when the backend can load, else why not."""
    if name not in REGISTRY:
        return f"unknown backend {name!r}; known: {', '.join(REGISTRY)}"
    module, needs, hint = REGISTRY[name]
    if module is None:
        return hint
    for mod in needs:
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed: {hint}"
    if importlib.util.find_spec(module) is None:
        return f"{module} is not written yet"
    return None


def loaded() -> list[str]:
    """Backends this process has loaded so far."""
    return list(_loaded)


def available() -> dict[str, str | None]:
    """backend name -> None if it can be loaded, else the reason it cannot."""
    return {name: _reason(name) for name in REGISTRY}


def load(name: str) -> Backend:
    """The backend object; raises BackendUnavailable with a hint when it cannot load."""
    if name in _loaded:
        return _loaded[name]
    reason = _reason(name)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} unavailable: {reason}")
    module = importlib.import_module(REGISTRY[name][0])
    try:
        backend = module.get_backend()
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} unavailable: {exc}; "
                                 f"{REGISTRY[name][2]}") from exc
    _loaded[name] = backend
    return backend


__all__ = [
    "ARCHS", "PRESETS", "PRESET_DOCS", "Backend", "BackendUnavailable", "DTypeError",
    "DeviceError", "Flow", "FlowSpec", "FlowbenchError", "InvalidInput", "NonFiniteError",
    "MATCHED", "PEERS", "ShapeError", "SpecError", "TrainConfig", "UnknownArch",
    "UnsupportedOp", "UnsupportedSpec", "available", "load", "loaded", "names",
]
