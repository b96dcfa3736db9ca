"""Asset checks with severities. Each reads the store (drive index, quarantine records, catalog,
shards) and compares with ``QualityThresholds``. WARN = look at it; ERROR = the data is wrong.

The dataset gate (``privacy_and_selection``, blocking) is declared on each dataset asset in
``dagster_project.assets`` because it must run before the build.
"""


from typing import Any

import dagster as dg

from dagster_project import facts
from dagster_project.assets import CLIP_CATALOG, CLIP_STORE, CURATED, TRIGGERS
from dagster_project.resources import FleetPaths, QualityThresholds

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


def _result(passed: bool, severity: dg.AssetCheckSeverity, description: str, metadata: dict[str, Any]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=passed, severity=severity, description=description, metadata=metadata)


def quarantine_rate(paths: FleetPaths, limits: QualityThresholds) -> dg.AssetCheckResult:
    store = paths.store()
    curated = facts.table(store, "drives").height
    bad = len(facts.quarantine_records(store))
    total = curated + bad
    rate = bad / total if total else 0.0
    md = {"drives_curated": curated, "drives_quarantined": bad, "quarantine_rate": round(rate, 4),
          "warn_above": limits.quarantine_warn, "error_above": limits.quarantine_error}
    if rate > limits.quarantine_error:
        return _result(False, ERROR, f"{bad} of {total} drives quarantined ({rate:.1%} > {limits.quarantine_error:.0%})", md)
    if rate > limits.quarantine_warn:
        return _result(False, WARN, f"{bad} of {total} drives quarantined ({rate:.1%} > {limits.quarantine_warn:.0%})", md)
    return _result(True, WARN, f"{bad} of {total} drives quarantined ({rate:.1%})", md)


def telemetry_coverage(paths: FleetPaths, limits: QualityThresholds) -> dg.AssetCheckResult:
    drives = facts.table(paths.store(), "drives")
    if drives.is_empty():
        return _result(True, WARN, "no curated drives yet", {"drives": 0})
    with_tel = int((drives["telemetry_rows"] > 0).sum())
    cov = with_tel / drives.height
    gappy = drives.filter(drives["telemetry_max_gap_s"] > limits.telemetry_max_gap_s)
    md = {"drives": drives.height, "drives_with_telemetry": with_tel, "telemetry_coverage": round(cov, 4),
          "max_gap_s": float(drives["telemetry_max_gap_s"].max() or 0.0), "drives_with_long_gaps": gappy.height}
    problems = []
    if cov < limits.telemetry_min_coverage:
        problems.append(f"only {with_tel} of {drives.height} drives carry telemetry ({cov:.0%} < {limits.telemetry_min_coverage:.0%})")
    if gappy.height:
        worst = gappy.sort("telemetry_max_gap_s", descending=True).row(0, named=True)
        problems.append(f"{gappy.height} drives have telemetry gaps longer than {limits.telemetry_max_gap_s} s "
                        f"(worst {worst['vehicle_id']}/{worst['drive_id']}: {worst['telemetry_max_gap_s']:.2f} s)")
    return _result(not problems, WARN, "; ".join(problems) or f"telemetry on {cov:.0%} of drives, no long gaps", md)


def clips_per_trigger(paths: FleetPaths, limits: QualityThresholds) -> dg.AssetCheckResult:
    """Clips containing a trigger / events of that trigger, per trigger: expected within a band
    (windows merge, so fewer clips than events is normal; none at all, or many more, is not)."""
    store = paths.store()
    events = facts.table(store, "triggers")
    clips = facts.table(store, "clips")
    ev = dict(facts.counts(events, "trigger"))
    cl = dict(facts.counts(clips, "triggers", explode=True))
    out_of_band = {}
    ratios = {}
    for trig, n in sorted(ev.items()):
        r = cl.get(trig, 0) / n
        ratios[trig] = round(r, 3)
        if not (limits.clips_per_event_min <= r <= limits.clips_per_event_max):
            out_of_band[trig] = r
    md: dict[str, Any] = {"events": events.height, "clips": clips.height, "trigger_types": len(ev),
                          "clips_per_event": round(clips.height / events.height, 3) if events.height else 0.0,
                          "band": f"[{limits.clips_per_event_min}, {limits.clips_per_event_max}]",
                          "ratios": dg.MetadataValue.json(ratios)}
    if out_of_band:
        txt = ", ".join(f"{k}: {v:.2f}" for k, v in out_of_band.items())
        return _result(False, WARN, f"clips per event outside {md['band']} for {txt}", md)
    return _result(True, WARN, f"clips per event within {md['band']} for {len(ev)} triggers", md)


def labeller_coverage(paths: FleetPaths, limits: QualityThresholds) -> dg.AssetCheckResult:
    store = paths.store()
    clips = facts.table(store, "clips")
    labels = facts.table(store, "labels")
    if labels.is_empty():
        return _result(False, WARN, "no labels table (catalog/labels/) yet: run the curate job with the labels stage", {"clips": clips.height})
    real = labels.filter(labels["labeller"] != "privacy")
    ids = set(real["clip_id"].to_list())
    n = clips.height
    labelled = sum(1 for c in clips["clip_id"].to_list() if c in ids) if n else 0
    cov = labelled / n if n else 0.0
    md = {"clips": n, "labelled_clips": labelled, "label_coverage": round(cov, 4),
          "labellers": dg.MetadataValue.json(sorted(set(real["labeller"].to_list())))}
    if cov < limits.label_min_coverage:
        return _result(False, WARN, f"{labelled} of {n} clips have labels ({cov:.0%} < {limits.label_min_coverage:.0%})", md)
    return _result(True, WARN, f"{labelled} of {n} clips have labels ({cov:.0%})", md)


def shard_checksums(paths: FleetPaths) -> dg.AssetCheckResult:
    from fleetcore.store.layout import StoreLayout
    from fleetcore.store.shards import verify_store

    problems = verify_store(StoreLayout(paths.store()).clips_dir)
    md: dict[str, Any] = {"problems": len(problems)}
    if problems:
        md["first_problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:20]))
        return _result(False, ERROR, f"{len(problems)} problems; first: {problems[0]}", md)
    return _result(True, ERROR, "every shard matches its sha256 and member list", md)


@dg.asset_check(asset=CURATED, name="quarantine_rate", description="Share of drives quarantined: WARN / ERROR above the thresholds.")
def quarantine_rate_check(paths: FleetPaths, limits: QualityThresholds) -> dg.AssetCheckResult:
    return quarantine_rate(paths, limits)


@dg.asset_check(asset=CURATED, name="telemetry_coverage", description="Drives with telemetry, and telemetry gaps, from the drive index.")
def telemetry_coverage_check(paths: FleetPaths, limits: QualityThresholds) -> dg.AssetCheckResult:
    return telemetry_coverage(paths, limits)


@dg.asset_check(asset=TRIGGERS, name="clips_per_trigger", description="Clips per trigger event within the expected band.")
def clips_per_trigger_check(paths: FleetPaths, limits: QualityThresholds) -> dg.AssetCheckResult:
    return clips_per_trigger(paths, limits)


@dg.asset_check(asset=CLIP_CATALOG, name="labeller_coverage", description="Fraction of clips with labels (WARN when low or when no labels table).")
def labeller_coverage_check(paths: FleetPaths, limits: QualityThresholds) -> dg.AssetCheckResult:
    return labeller_coverage(paths, limits)


@dg.asset_check(asset=CLIP_STORE, name="shard_checksums", description="Re-hash every shard against clips/manifest.json (fleetcore.store.shards.verify_store).")
def shard_checksums_check(paths: FleetPaths) -> dg.AssetCheckResult:
    return shard_checksums(paths)


CHECKS = [quarantine_rate_check, telemetry_coverage_check, clips_per_trigger_check, labeller_coverage_check, shard_checksums_check]
