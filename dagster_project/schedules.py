"""Schedules: curate yesterday's partition every night; rebuild the datasets every week."""


import datetime as dt
from typing import Any

import dagster as dg


def nightly_curate(job: Any, *, cron: str = "0 2 * * *", partitions_name: str | None = None) -> dg.ScheduleDefinition:
    """``partitions_name``: the dynamic partitions of the job; a day without a partition (no drive
    landed) is skipped."""

    @dg.schedule(name="nightly_curate", cron_schedule=cron, job=job, execution_timezone="UTC",
                 description="02:00 UTC: curate yesterday's UTC date if drives of that date landed (late uploads are caught by the landing sensor).")
    def _nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        when = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
        yesterday = (when.astimezone(dt.timezone.utc) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
        if partitions_name and not context.instance.has_dynamic_partition(partitions_name, yesterday):
            return dg.SkipReason(f"no drives dated {yesterday} have landed (no partition {yesterday})")
        return dg.RunRequest(run_key=f"nightly:{yesterday}", partition_key=yesterday)

    return _nightly


def weekly_datasets(job: Any, *, cron: str = "0 4 * * 0") -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name="weekly_datasets", cron_schedule=cron, job=job, execution_timezone="UTC",
                                 description="Sundays 04:00 UTC: rebuild the coverage report and every dataset asset.")
