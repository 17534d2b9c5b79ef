"""The one registry pattern: components of one kind by the name results record them under.

Workloads, parallel strategies, fault kinds, launchers and collective ops each have one Registry,
built in one place from component objects. A component has a ``name`` (as written in config.json and
summary.json), a one-line ``summary`` for help texts, optional ``aliases``, its capability row as plain
attributes, and answers for itself whether a run spec suits it (``validate(spec)``); the registry only
finds it. It lives in the results contract because those names are part of every results folder, and
so that workloads can declare theirs without depending on the rest of trainscale.
"""
from __future__ import annotations

from typing import Generic, Iterable, Iterator, Protocol, TypeVar


class Component(Protocol):
    name: str
    summary: str


C = TypeVar("C", bound=Component)


class UnknownName(ValueError):
    """A name that no component of the kind has; the message names it and lists the known ones."""


class Registry(Generic[C]):
    def __init__(self, kind: str, components: Iterable[C]) -> None:
        self.kind = kind
        self._components: dict[str, C] = {}
        self._aliases: dict[str, str] = {}
        for c in components:
            for name in (c.name, *getattr(c, "aliases", ())):
                if name in self._components or name in self._aliases:
                    raise ValueError(f"two {kind} components are called {name!r}")
                self._aliases[name] = c.name
            self._components[c.name] = c

    def get(self, name: str) -> C:
        """The component called name (or one of its aliases); UnknownName listing the known names."""
        if name not in self._aliases:
            raise UnknownName(f"unknown {self.kind} {name!r} (known: {', '.join(self._components)})")
        return self._components[self._aliases[name]]

    def names(self) -> list[str]:
        return list(self._components)

    def help(self, sep: str = "; ") -> str:
        """'name: summary' of every component, for help texts."""
        return sep.join(f"{c.name}: {c.summary}" for c in self)

    def __contains__(self, name: object) -> bool:
        return name in self._aliases

    def __iter__(self) -> Iterator[C]:
        return iter(self._components.values())

    def __len__(self) -> int:
        return len(self._components)
