"""Name -> object registries filled by plugins (timm-style), with where each entry came from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from automl_prune.errors import AutomlPruneError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object: its name, the object, the plugin that registered it, free metadata."""

    name: str
    obj: T
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A registry of one kind of thing (strategy, model, dataset or task)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self.failures: list[Any] = []  # plugins that failed to load (``PluginFailure``), named on a miss

    def register(self, name: str, obj: T, *, source: str = "?", **meta: Any) -> None:
        if name in self._entries and self._entries[name].source != source:
            other = self._entries[name].source
            raise AutomlPruneError(
                f"{self.kind} {name!r} is registered by both {other!r} and {source!r}",
                "uninstall one of the two plugins or rename the entry in yours",
            )
        self._entries[name] = Entry(name, obj, source, dict(meta))

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            error = UnknownNameError(self.kind, name, self._entries)
            if self.failures:
                broken = "; ".join(f"{f.name} ({f.error})" for f in self.failures)
                error.fix += f"; plugins that failed to load: {broken}"
            raise error from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
