"""Explicit registries, one per kind of thing (architectures, losses, backends).

Entries are registered by name with a decorator in the module that defines them and built from a spec
``{"type": name, **kwargs}``. A missing or duplicate name raises with the known names; nothing falls back.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice "
                               f"({self._entries[name].__module__} and {obj.__module__})")
            self._entries[name] = obj
            return obj
        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}") from None

    def build(self, spec: dict[str, Any]) -> T:
        if "type" not in spec:
            raise KeyError(f"{self.kind} spec {spec!r} has no 'type'; known: {', '.join(sorted(self._entries))}")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        factory = self.get(spec["type"])
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.kind} {spec['type']!r}: {exc}") from exc

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
