"""The encoder registry: ``@register_encoder`` and ``create_encoder(name, ...)``."""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from torch import nn

__all__ = ["register_encoder", "create_encoder", "list_encoders", "encoder_config"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
T = TypeVar("T", bound=Callable[..., nn.Module])


def register_encoder(name: str) -> Callable[[T], T]:
    """Register an encoder class or factory under ``name``.

    The encoder must take keyword arguments only (no ``**kwargs``), expose
    ``embedding_dim`` and return (B, embedding_dim) from ``forward``.
    """

    def deco(fn: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_encoders() -> list[str]:
    """Names of the registered encoders, sorted."""
    return sorted(_REGISTRY)


def create_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered encoder by name with explicit keyword arguments.

    A misspelt or unsupported argument fails here, naming the accepted ones.

    Args:
        name: a registered encoder (see :func:`list_encoders`).
        **kwargs: the encoder's keyword arguments; remembered on the encoder so that
            :func:`encoder_config` can rebuild it.

    Returns:
        The encoder, with ``encoder_name`` and ``encoder_kwargs`` set.

    Raises:
        ValueError: unknown ``name``.
        TypeError: an argument the encoder does not take.

    Example:
        >>> enc = create_encoder("conv4", in_channels=1, embedding_dim=64)
        >>> enc.embedding_dim
        64
    """
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose one of {list_encoders()}") from None
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        accepted = sorted(p for p in params if p != "self")
        raise TypeError(f"encoder {name!r} does not take {unknown}; it takes {accepted}")
    enc = fn(**kwargs)
    enc.encoder_name = name  # type: ignore[attr-defined]
    enc.encoder_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    return enc


def encoder_config(encoder: nn.Module) -> dict[str, Any]:
    """The JSON-able recipe that rebuilds ``encoder`` with :func:`create_encoder`."""
    name = getattr(encoder, "encoder_name", None)
    if name is None:
        raise ValueError("this encoder was not made by create_encoder, so it cannot be saved by name")
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in encoder.encoder_kwargs.items()}
    return {"name": name, "kwargs": kwargs}
