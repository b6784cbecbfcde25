"""Run code right after a module is first imported, without importing it ourselves.

``import dllm_notebook`` stays quick by not importing pandas. The ``.dllm`` DataFrame
accessor still has to be there for any DataFrame, also one read from Parquet before the
library built a single table: :func:`when_imported` registers it the moment pandas is
imported, by whoever imports it (at once, if pandas is already loaded).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType

__all__ = ["when_imported"]

_hooks: dict[str, list[Callable[[], None]]] = {}
_lock = threading.Lock()


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once module ``name`` has been imported (now, if it has been)."""
    with _lock:
        if name not in sys.modules:
            _hooks.setdefault(name, []).append(callback)
            if not any(isinstance(f, _Finder) for f in sys.meta_path):
                sys.meta_path.insert(0, _Finder())
            return
    callback()


def _fire(name: str) -> None:
    with _lock:
        callbacks = _hooks.pop(name, [])
    for callback in callbacks:
        callback()


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of a watched module so its hooks run after it has executed."""

    def __init__(self) -> None:
        self._busy: set[str] = set()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _hooks or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader, fullname)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, name: str) -> None:
        self._inner = inner
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__.loader = self._inner  # type: ignore[union-attr]
        module.__loader__ = self._inner
        self._inner.exec_module(module)
        _fire(self._name)
