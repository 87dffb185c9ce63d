"""Typed errors. Every message names the problem and, where there is one, the fix."""


class FlowbenchError(Exception):
    """Base class of every error flowbench raises on purpose."""


class SpecError(FlowbenchError, ValueError):
    """A FlowSpec that describes no valid flow."""


class UnknownArch(SpecError):
    """An arch preset that does not exist."""


class UnsupportedSpec(SpecError):
    """A valid spec that one backend cannot build; the message says why."""


class BackendUnavailable(FlowbenchError, ImportError):
    """A backend whose framework is not installed (or not implemented yet)."""


class InvalidInput(FlowbenchError, ValueError):
    """Input to a flow op that cannot be used."""


class ShapeError(InvalidInput):
    """Input of the wrong shape."""


class DTypeError(InvalidInput, TypeError):
    """Input of a dtype that is not a real floating point type."""


class NonFiniteError(InvalidInput):
    """Input holding NaN or infinity."""


class DeviceError(FlowbenchError, RuntimeError):
    """A device that is unknown or not present on this machine."""


class UnsupportedOp(FlowbenchError, NotImplementedError):
    """An operation that a backend declares it does not offer (a peer library's flow has
    no canonical weights, no exact inverse, ...); the message says why."""
