"""Progress bars that every long loop uses, silenced in quiet mode (CI) with one switch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


@dataclass
class Progress:
    """A progress reporter: ``for x in progress.bar(items, "epochs"): ...``."""

    quiet: bool = False

    def bar(
        self, items: Iterable[T], desc: str, total: int | None = None, leave: bool = False
    ) -> Iterator[T]:
        return iter(tqdm(items, desc=desc, total=total, leave=leave, disable=self.quiet, dynamic_ncols=True))

    def log(self, message: str) -> None:
        if not self.quiet:
            tqdm.write(message)
