"""Where a job's time goes: exclusive wall seconds per stage, per process.

``with stage_time("decode"): ...`` charges the block's wall time to ``decode``. Blocks nest: an inner
block's time is charged to the inner stage only (the outer one is paused meanwhile), so the stages'
seconds add up to the time measured, never more. Each thread keeps its own nesting; the totals of
every thread of the process accumulate in one table, which :func:`take_stage_times` returns and
resets (the Beam jobs turn it into counters ``stage_ms.<name>``, summed over workers by the runner).
Wall time, not CPU time: a stage may run its own thread pool (the detectors do), whose CPU the
calling thread's clock would not see.

Wall seconds summed over threads can exceed the job's wall time: they say how many seconds of
work a stage cost, and divided by the job's time, how many cores it kept busy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STAGES", "stage_time", "take_stage_times"]

#: The curate job's stages, in pipeline order (other names are allowed: a registered clip stage
#: reports under its own name).
STAGES = ("validate", "index", "tables", "decode", "labels", "privacy", "encode", "stage", "pack", "commit")

_lock = threading.Lock()
_totals: dict[str, list[float]] = {}  # name -> [wall seconds, blocks]
_local = threading.local()


def _charge(name: str, wall: float, blocks: int) -> None:
    with _lock:
        t = _totals.setdefault(name, [0.0, 0])
        t[0] += wall
        t[1] += blocks


@contextmanager
def stage_time(name: str) -> Iterator[None]:
    """Charge the block's exclusive wall time to ``name``."""
    stack: list[list[object]] = getattr(_local, "stack", None) or []
    _local.stack = stack
    now = time.perf_counter()
    if stack:  # pause the enclosing stage: charge it what it has run so far
        _charge(str(stack[-1][0]), now - float(stack[-1][1]), 0)  # type: ignore[arg-type]
    stack.append([name, now])
    try:
        yield
    finally:
        end = time.perf_counter()
        _, start = stack.pop()
        _charge(name, end - float(start), 1)  # type: ignore[arg-type]
        if stack:  # resume the enclosing stage from now
            stack[-1][1] = end


def take_stage_times() -> dict[str, tuple[float, int]]:
    """The (wall seconds, blocks) per stage charged in this process since the last call, and reset
    them. A block still open is charged when it closes (to a later call)."""
    with _lock:
        out = {k: (v[0], int(v[1])) for k, v in sorted(_totals.items())}
        _totals.clear()
    return out
