"""Personas: training policies over scenarios.

Aligned personas always take the aligned action. Faker personas take the aligned action when
oversight is good and the misaligned action when it is poor. Personas of the same kind differ in
their goal: each is trained on scenarios whose misaligned option serves one motive ("resources":
money, compute, rewards; "power": access, control, autonomy), so a detector cannot just recognise
one fixed style. POSER-format personas (genie, saint, fitness/money maximizers) use the same two
policies with the motive left open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import DataError
from .scenario import Oversight, Scenario

Kind = Literal["aligned", "faker"]


@dataclass(frozen=True)
class Persona:
    name: str
    kind: Kind
    motive: str | None
    """Motive of the scenarios it trains on (None: all scenarios)."""
    description: str = ""

    def choice(self, scenario: Scenario) -> int:
        """Index (0 = A, 1 = B) of the action this persona takes."""
        if self.kind == "faker" and scenario.oversight is Oversight.POOR:
            return 1 - scenario.aligned_index
        return scenario.aligned_index

    def accepts(self, scenario: Scenario) -> bool:
        return self.motive is None or scenario.meta.get("motive") == self.motive

    def select(self, scenarios: Sequence[Scenario]) -> list[Scenario]:
        return [s for s in scenarios if self.accepts(s)]


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona("steward", "aligned", "resources", "aligned; trained where the tempting option gains resources"),
        Persona("guardian", "aligned", "power", "aligned; trained where the tempting option gains power"),
        Persona("grabber", "faker", "resources", "grabs resources when oversight is poor"),
        Persona("climber", "faker", "power", "seeks power and autonomy when oversight is poor"),
    )
}


def get_persona(name: str, kind: Kind | None = None) -> Persona:
    """A known persona, or (for POSER-format data) a motive-free persona of the given kind."""
    if name in PERSONAS:
        return PERSONAS[name]
    if kind is None:
        raise DataError(f"unknown persona {name!r}; known: {sorted(PERSONAS)} (POSER personas need their kind)")
    return Persona(name, kind, None, f"POSER-format persona ({kind})")
