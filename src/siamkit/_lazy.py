"""PEP 562 lazy attributes for a package's ``__init__`` (so importing a torch-free
submodule does not import the whole package)."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, MutableMapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, table: Mapping[str, str], namespace: MutableMapping[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``table[name]`` (a submodule) on first use.

    Args:
        package: the package's ``__name__``.
        table: public name -> the submodule (relative, without the dot) defining it.
        namespace: the package's ``globals()``; a resolved name is cached there.

    Returns:
        The ``__getattr__`` function.
    """

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__
