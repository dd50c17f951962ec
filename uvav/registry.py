"""Name -> entry registries (methods, datasets) and the discovery that fills them.

An entry registers itself when its module is imported. A registry imports, on first use, every module of its
package (``uvav.methods``; ``uvav.data`` but its machinery, which imports torch) and then the *plugins*: the
modules named in ``$UVAV_PLUGINS`` (comma-separated) and those of the ``uvav.plugins`` entry-point group of
installed packages. So a method or a dataset outside uvav is one module (plus its YAML, found through
``hydra.searchpath``), and nothing else in uvav lists names.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Generic, Protocol, TypeVar

PLUGINS_ENV = "UVAV_PLUGINS"
ENTRY_POINT_GROUP = "uvav.plugins"


class Named(Protocol):
    name: str
    order: int
    schema: type  # the dataclass of its config node, whose ``name`` defaults to the entry's name


T = TypeVar("T", bound=Named)


class UnknownNameError(LookupError):
    """A name no module registered."""


def load_plugins() -> list[str]:
    """Import the plugin modules (``$UVAV_PLUGINS``, then entry points of group ``uvav.plugins``); returns their
    names. Importing a module twice is a no-op, so this may run any number of times."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"{PLUGINS_ENV} names module {name!r}, which cannot be imported: {exc}") from exc
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party plugin is named
            raise ImportError(f"the {ENTRY_POINT_GROUP} entry point {point.name} = {point.value} cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from exc
        names.append(point.value)
    return names


def _origin(entry: Named) -> tuple[str, str]:
    """Where an entry is defined: its schema's source file and qualified name (the same module imported under two
    names has one origin; two different definitions of one name have two)."""
    return inspect.getsourcefile(entry.schema) or entry.schema.__module__, entry.schema.__qualname__


class Registry(Generic[T]):
    """Entries of one kind by name, in ``order`` (then name): what tables and listings iterate over."""

    def __init__(self, kind: str, package: str, machinery: tuple[str, ...] = ()) -> None:
        self.kind, self.package = kind, package
        self.machinery = machinery  # modules of the package that register nothing: not imported by discovery
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, entry: T) -> T:
        """Add ``entry``. A second entry of the same name is an error, unless it is the same definition again (its
        module imported under two names); so is a schema whose ``name`` is not the entry's."""
        if getattr(entry.schema, "name", entry.name) != entry.name:
            raise ValueError(f"{self.kind} {entry.name!r}: its schema {entry.schema.__qualname__} has name "
                             f"{entry.schema.name!r}; they must agree (the YAML's name too)")
        old = self._entries.get(entry.name)
        if old is not None and _origin(old) != _origin(entry):
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice: by {_origin(old)} and {_origin(entry)}")
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            self.discover(again=True)
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}: one of {self.names()} (a {self.kind} outside "
                                   f"uvav registers when its module is imported: ${PLUGINS_ENV}=<module>)")
        return self._entries[name]

    def names(self) -> list[str]:
        return [e.name for e in self]

    def __iter__(self) -> Iterator[T]:
        self.discover()
        return iter(sorted(self._entries.values(), key=lambda e: (e.order, e.name)))

    def discover(self, again: bool = False) -> None:
        """Import every module of the package but its :attr:`machinery`, then the plugins (once, or ``again``)."""
        if self._discovered and not again:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__, f"{self.package}."):
            if info.name.rpartition(".")[2] not in self.machinery:
                importlib.import_module(info.name)
        load_plugins()
        self._discovered = True  # only once everything imported: a failed import is retried, and raised again
