"""The landing sensor: one run request per UTC date that has newly completed drives.

Cursor: ``{"v": 1, "seen": [<12-hex sha256 of "vehicle/drive">, ...]}`` (sorted), so no drive is
requested twice and the cursor stays small. Only drives with ``_UPLOAD_COMPLETE`` are considered;
an upload in progress is not requested (and not remembered, so it is requested once it completes).
"""


import hashlib
from typing import Any

import dagster as dg

from dagster_project.landing_scan import key_digest, new_drives_by_date, read_cursor, write_cursor
from dagster_project.resources import FleetPaths


def landing_sensor(job: Any, partitions_def: dg.PartitionsDefinition, *, minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Requests a curate run for each UTC date with newly completed drives in the landing zone.",
    )
    def _sensor(context: dg.SensorEvaluationContext, paths: FleetPaths) -> dg.SensorResult | dg.SkipReason:
        try:
            seen = read_cursor(context.cursor)
        except ValueError as exc:
            context.log.warning("%s; starting from an empty cursor", exc)
            seen = set()
        by_date, bad = new_drives_by_date(paths.landing(), seen)
        for ld in bad:
            context.log.warning("%s: cannot date the drive (%s); the curate job will quarantine it", ld.key, ld.problem)
            seen.add(key_digest(ld.key))
        valid = set(partitions_def.get_partition_keys(dynamic_partitions_store=context.instance))
        requests = []
        for date, drives in by_date.items():
            if date not in valid:
                context.log.warning("%d drives dated %s are outside the partitions (%s...); not requested", len(drives), date, min(valid) if valid else "none")
                continue
            keys = sorted(d.key for d in drives)
            digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
            requests.append(dg.RunRequest(run_key=f"{date}:{digest}", partition_key=date,
                                          tags={"fleet/new_drives": str(len(keys)), "fleet/trigger": "landing_sensor"}))
            seen.update(key_digest(k) for k in keys)
        cursor = write_cursor(seen)
        if not requests:
            return dg.SensorResult(skip_reason=dg.SkipReason("no newly completed drives"), cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _sensor
