"""The fault suite's ledger: every fault test records what it tried and how it ended; the session ends
with the totals (tried, handled, lost, tracebacks) and fails when anything was lost or escaped as a
traceback. ``make faults`` runs this folder alone; ``make test`` runs it with the rest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest


@dataclass
class Ledger:
    outcomes: dict[str, str] = field(default_factory=dict)

    def record(self, fault: str, outcome: str) -> None:
        """``outcome``: 'handled' (the expected typed error, quarantine code or clean recovery), 'lost'
        (a drive or sample vanished without a record), 'traceback' (an untyped exception escaped) or
        'wrong' (handled, but not as the table says)."""
        assert outcome in {"handled", "lost", "traceback", "wrong"}, outcome
        self.outcomes[fault] = outcome

    def totals(self) -> Counter[str]:
        return Counter(self.outcomes.values())


LEDGER = Ledger()


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return LEDGER


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest's hook signature
    if not LEDGER.outcomes:
        return
    t = LEDGER.totals()
    terminalreporter.section("fault suite")
    terminalreporter.write_line(
        f"faults tried {len(LEDGER.outcomes)}, handled {t['handled']}, lost {t['lost']}, "
        f"tracebacks {t['traceback']}, handled wrongly {t['wrong']}")
    for fault, outcome in sorted(LEDGER.outcomes.items()):
        if outcome != "handled":
            terminalreporter.write_line(f"  {outcome}: {fault}")
