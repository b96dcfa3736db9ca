"""Daily partitions by the drive's UTC date. Drive ids live in tables, not in partitions."""

from __future__ import annotations

import dagster as dg

#: The simulator's default start date (``fleetcore.simulate.simulate_fleet(start_date=...)``).
DEFAULT_START_DATE = "2026-11-20"


def drive_date_partitions(start_date: str = DEFAULT_START_DATE) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day from ``start_date``; ``end_offset=1`` so today's drives have a
    partition as soon as they land (the nightly schedule still curates yesterday's)."""
    return dg.DailyPartitionsDefinition(start_date=start_date, end_offset=1)
