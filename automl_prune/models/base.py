"""How a model architecture is named, so that a pruned model can be rebuilt without pickle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelRef:
    """A registry name (or ``module:factory``) plus the factory's keyword arguments.

    ``build_model(ref, info)`` turns it back into an untrained module with the base architecture; the
    persistence layer then reshapes it to the pruned widths and loads the weights.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelRef:
        return cls(name=d["name"], kwargs=dict(d.get("kwargs", {})))
