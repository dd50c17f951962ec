"""Name -> entry registries (methods, datasets) and the discovery that fills them.

An entry registers itself when its module is imported. A registry imports, on first use, every module of its
package (``uvav.methods``, ``uvav.data``) and then the *plugins*: the modules named in ``$UVAV_PLUGINS``
(comma-separated) and those of the ``uvav.plugins`` entry-point group of installed packages. So a method or a
dataset outside uvav is one module (plus its YAML, found through ``hydra.searchpath``), and nothing else in
uvav lists names.
"""

from __future__ import annotations

import importlib
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
        point.load()
        names.append(point.value)
    return names


class Registry(Generic[T]):
    """Entries of one kind by name, in ``order`` (then name): what tables and listings iterate over."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, entry: T) -> T:
        """Add ``entry``; registering the same name twice is an error unless it is the same class again (a
        module imported under two names)."""
        old = self._entries.get(entry.name)
        if old is not None and type(old).__qualname__ != type(entry).__qualname__:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice: {old!r} and {entry!r}")
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

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def discover(self, again: bool = False) -> None:
        """Import every module of the package, then the plugins (once, or ``again``)."""
        if self._discovered and not again:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__, f"{self.package}."):
            importlib.import_module(info.name)
        load_plugins()
