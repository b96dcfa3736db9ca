"""Daily partitions that follow the data: one partition per UTC drive date present in the landing zone
or in the clip store. Drive ids live in tables, not in partitions.

The partitions are dynamic (``DynamicPartitionsDefinition(name="drive_dates")``): the landing sensor adds
the date of every newly completed drive (imported drives of 2016 or 2018 get their own partitions), the
store sensor adds the dates of a store curated outside Dagster, and ``python -m dagster_project.partitions
--landing L`` (or the Launchpad / the partitions page: "Add partition") adds them by hand.
"""

from __future__ import annotations

import argparse
import logging
from typing import Iterable, Sequence

import dagster as dg

#: The name of the dynamic partitions set (kept in the Dagster instance).
DRIVE_DATES = "drive_dates"


def drive_date_partitions() -> dg.DynamicPartitionsDefinition:
    """The partitions of the curate assets: UTC drive dates, added as drives land."""
    return dg.DynamicPartitionsDefinition(name=DRIVE_DATES)


def add_dates_request(partitions_def: dg.PartitionsDefinition, dates: Iterable[str], instance: dg.DagsterInstance) -> list:
    """A sensor's ``dynamic_partitions_requests``: add the dates the instance does not have yet."""
    if not isinstance(partitions_def, dg.DynamicPartitionsDefinition) or partitions_def.name is None:
        return []
    missing = sorted({d for d in dates if not instance.has_dynamic_partition(partitions_def.name, d)})
    return [partitions_def.build_add_request(missing)] if missing else []


def valid_dates(partitions_def: dg.PartitionsDefinition, dates: Iterable[str], instance: dg.DagsterInstance) -> set[str]:
    """Which of ``dates`` are (or, for dynamic partitions, become) partitions."""
    dates = set(dates)
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return dates
    return dates & set(partitions_def.get_partition_keys(dynamic_partitions_store=instance))


def landing_dates(landing: str) -> list[str]:
    """The UTC dates of the complete drives in a landing zone (cheap: manifests and statistics)."""
    from dagster_project.landing_scan import new_drives_by_date

    by_date, _ = new_drives_by_date(landing, set())
    return sorted(by_date)


def add_landing_dates(instance: dg.DagsterInstance, landing: str) -> list[str]:
    """Add the landing zone's drive dates the instance lacks as partitions; returns the dates added."""
    have = set(instance.get_dynamic_partitions(DRIVE_DATES))
    new = [d for d in landing_dates(landing) if d not in have]
    if new:
        instance.add_dynamic_partitions(DRIVE_DATES, new)
    return new


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dagster_project.partitions",
                                description="Add the drive dates of a landing zone as partitions of the current Dagster instance ($DAGSTER_HOME).")
    p.add_argument("--landing", required=True, help="landing zone root")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with dg.DagsterInstance.get() as instance:
        added = add_landing_dates(instance, args.landing)
    logging.getLogger(__name__).info("added %d partitions: %s", len(added), ", ".join(added) or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
