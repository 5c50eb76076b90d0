"""Where the one table of legal machine moves (fleet.model.LEGAL_MOVES) is enforced: every
move the store writes is checked here first."""

from __future__ import annotations

from fleet.model import LEGAL_MOVES, MachineState


class IllegalMove(ValueError):
    pass


def check_move(from_state: MachineState, to_state: MachineState) -> None:
    if to_state not in LEGAL_MOVES[from_state]:
        raise IllegalMove(f"illegal machine move {from_state.value} -> {to_state.value}")
