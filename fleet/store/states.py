"""The one table of legal machine moves (DESIGN.md, "A machine's life").

Machine rows are written when the provider has answered (the intent before it
lives in the `actions` table), so rows start at REQUESTED (a create we know was
sent but not yet listed), BOOTING or READY.
"""

from __future__ import annotations

from fleet.model import MachineState as S

LEGAL_MOVES: dict[S, frozenset[S]] = {
    S.PLANNED: frozenset({S.REQUESTED, S.FAILED}),
    S.REQUESTED: frozenset({S.BOOTING, S.READY, S.TERMINATING, S.TERMINATED, S.FAILED}),
    S.BOOTING: frozenset({S.READY, S.DRAINING, S.TERMINATING, S.TERMINATED, S.FAILED}),
    S.READY: frozenset({S.BOOTING, S.DRAINING, S.TERMINATING, S.TERMINATED, S.FAILED}),
    S.DRAINING: frozenset({S.READY, S.TERMINATING, S.TERMINATED, S.FAILED}),  # READY: taken back
    S.TERMINATING: frozenset({S.TERMINATED}),
    S.FAILED: frozenset({S.TERMINATING, S.TERMINATED}),
    # only when the provider lists it again: a listing that missed it for a while closed it
    S.TERMINATED: frozenset({S.BOOTING, S.READY, S.TERMINATING, S.FAILED}),
}


class IllegalMove(ValueError):
    pass


def check_move(from_state: S, to_state: S) -> None:
    if to_state not in LEGAL_MOVES[from_state]:
        raise IllegalMove(f"illegal machine move {from_state.value} -> {to_state.value}")
