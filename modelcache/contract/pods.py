"""A pod the webhook gave a model, as the Kubernetes API lists it: what the purge and the pins compare."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PodRef:
    """A live pod: namespace, name and UID (a recreated pod of the same name has another UID)."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
