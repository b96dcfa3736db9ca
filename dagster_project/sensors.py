"""The landing sensor: one run request per UTC date that has newly completed drives (adding the date's
partition when it has none); the store sensor: the store's drive dates as materialised partitions.

Cursor: ``{"v": 1, "seen": [<12-hex sha256 of "vehicle/drive">, ...]}`` (sorted), so no drive is
requested twice and the cursor stays small. Only drives with ``_UPLOAD_COMPLETE`` are considered;
an upload in progress is not requested (and not remembered, so it is requested once it completes).
"""


import hashlib
from typing import Any

import dagster as dg

from dagster_project.landing_scan import key_digest, new_drives_by_date, read_cursor, write_cursor
from dagster_project.partitions import add_dates_request, valid_dates
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
        valid = valid_dates(partitions_def, by_date, context.instance)
        requests = []
        for date, drives in by_date.items():
            if date not in valid:
                context.log.warning("%d drives dated %s are outside the partitions; not requested", len(drives), date)
                continue
            keys = sorted(d.key for d in drives)
            digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
            requests.append(dg.RunRequest(run_key=f"{date}:{digest}", partition_key=date,
                                          tags={"fleet/new_drives": str(len(keys)), "fleet/trigger": "landing_sensor"}))
            seen.update(key_digest(k) for k in keys)
        cursor = write_cursor(seen)
        if not requests:
            return dg.SensorResult(skip_reason=dg.SkipReason("no newly completed drives"), cursor=cursor)
        adds = add_dates_request(partitions_def, [r.partition_key for r in requests], context.instance)
        return dg.SensorResult(run_requests=requests, cursor=cursor, dynamic_partitions_requests=adds)

    return _sensor


def store_sensor(partitions_def: dg.PartitionsDefinition, asset_keys: list[dg.AssetKey], *,
                 minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    """Reports a runless materialisation of ``asset_keys`` (the curate assets) for every drive date whose
    generations in the store's manifest differ from what Dagster last recorded for that partition (the
    ``store_digest`` metadata), so a store curated outside Dagster shows as materialised; adds missing
    partitions. Cursor: ``{"v": 1, "dates": {date: digest}}``."""
    from dagster_project import store_sync

    @dg.sensor(
        name="store_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,  # read-only and cheap (one manifest read per tick)
        description="Reads the clip store's manifest: a drive date curated outside Dagster (fleet curate, make demo) "
        "is reported as a materialisation of the curate assets for its partition.",
    )
    def _sensor(context: dg.SensorEvaluationContext, paths: FleetPaths) -> dg.SensorResult:
        try:
            seen = store_sync.read_cursor(context.cursor)
        except ValueError as exc:
            context.log.warning("%s; starting from an empty cursor", exc)
            seen = {}
        store = paths.store()
        revision, states = store_sync.store_date_states(store)
        events: list[dg.AssetMaterialization] = []
        changed = [st for date, st in states.items() if seen.get(date) != st.digest]
        valid = valid_dates(partitions_def, [st.date for st in changed], context.instance)
        for st in changed:
            if st.date not in valid:
                context.log.warning("store date %s is outside the partitions; not reported", st.date)
                continue
            seen[st.date] = st.digest
            if _recorded_digest(context.instance, asset_keys[-1], st.date) == st.digest:
                continue  # Dagster's own run wrote it
            md = store_sync.observed_metadata(st, revision, store)
            events.extend(dg.AssetMaterialization(asset_key=k, partition=st.date, metadata=md) for k in asset_keys)
        adds = add_dates_request(partitions_def, {e.partition for e in events if e.partition}, context.instance)
        cursor = store_sync.write_cursor(seen)
        if not events:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"store revision {revision}: nothing new"), cursor=cursor)
        context.log.info("store revision %d: %d dates curated outside Dagster", revision, len(events) // max(1, len(asset_keys)))
        return dg.SensorResult(asset_events=events, dynamic_partitions_requests=adds, cursor=cursor)

    return _sensor


def _recorded_digest(instance: dg.DagsterInstance, key: dg.AssetKey, date: str) -> str | None:
    """The ``store_digest`` of the partition's latest materialisation (None: none, or one without it)."""
    from dagster_project.store_sync import DIGEST_KEY

    recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[date]), limit=1).records
    if not recs or recs[0].asset_materialization is None:
        return None
    value = recs[0].asset_materialization.metadata.get(DIGEST_KEY)
    return None if value is None else str(value.value)
