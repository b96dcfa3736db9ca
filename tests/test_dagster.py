"""The Dagster control plane: definitions load, the landing sensor, schedules, assets materialised
in-process on a simulated fleet (real video, real Beam run), checks on planted bad data, the dataset gate."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import dagster as dg

from dagster_project import assets as A
from dagster_project.checks import CHECKS, clips_per_trigger, labeller_coverage, quarantine_rate, shard_checksums, telemetry_coverage
from dagster_project.definitions import build_defs, defs
from dagster_project.home import write_home
from dagster_project.jobs import MineConfig, curate_job, mine_dataset
from dagster_project.landing_scan import drive_start_ns, read_cursor
from dagster_project.partitions import DRIVE_DATES, drive_date_partitions
from dagster_project.beam_pipes import BeamPipesClient
from dagster_project.resources import BeamRunner, FleetPaths, QualityThresholds
from dagster_project.sensors import landing_sensor, store_sensor
from fleetcore.landing.drives import UPLOAD_COMPLETE, read_manifest

DATE = "2026-11-20"
CURATE_KEYS = [A.CURATED, A.TRIGGERS, A.CLIP_STORE, A.CLIP_CATALOG]


# --------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------
def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"landing_drives", "curated_drives", "trigger_events", "clip_store", "clip_catalog", "coverage_report"} <= keys
    assert {"curate_job", "datasets_job", "mine_dataset"} <= {j.name for j in repo.get_all_jobs()}
    assert sorted(s.name for s in repo.sensor_defs) == ["landing_sensor", "store_sensor"]
    assert {s.name for s in repo.schedule_defs} == {"nightly_curate", "weekly_datasets"}
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"quarantine_rate", "telemetry_coverage", "clips_per_trigger", "labeller_coverage", "shard_checksums"} <= checks
    # the curate assets are partitioned by the drive dates present (dynamic), in the decode pool
    curate = repo.assets_defs_by_key[A.CURATED]
    assert isinstance(curate.partitions_def, dg.DynamicPartitionsDefinition) and curate.partitions_def.name == DRIVE_DATES
    assert curate.op.pool == "decode"
    assert curate.op.retry_policy is not None


def test_each_spec_file_is_an_asset(tmp_path):
    specs = tmp_path / "datasets"
    specs.mkdir()
    (specs / "hard-brakes.yaml").write_text(yaml.safe_dump({"name": "hard-brakes", "sql": "SELECT clip_id FROM clips"}))
    (specs / "night.yaml").write_text(yaml.safe_dump({"name": "night", "sql": "SELECT clip_id FROM clips"}))
    d = build_defs(specs_dir=specs)
    dg.Definitions.validate_loadable(d)
    repo = d.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"dataset_hard_brakes", "dataset_night"} <= keys
    gate = dg.AssetCheckKey(dg.AssetKey("dataset_night"), A.PREFLIGHT_CHECK)
    assert gate in repo.asset_graph.asset_check_keys
    assert repo.asset_graph.get_check_spec(gate).blocking
    # a third file is a third asset, no code change
    (specs / "rain.yaml").write_text(yaml.safe_dump({"name": "rain", "sql": "SELECT clip_id FROM clips"}))
    keys = {k.to_user_string() for k in build_defs(specs_dir=specs).get_repository_def().asset_graph.get_all_asset_keys()}
    assert "dataset_rain" in keys


def test_beam_runner_resource_names_the_local_engine():
    assert BeamRunner().beam_args() == ["--runner=FnApiRunner"]
    r = BeamRunner(runner="DaskRunner", options=["--dask_client_address=tcp://h:8786", "--runner=ignored"])
    assert r.beam_args() == ["--runner=DaskRunner", "--dask_client_address=tcp://h:8786"]


def test_fleet_paths_resolve_at_run_time(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_LANDING_ROOT", str(tmp_path / "L"))
    monkeypatch.delenv("FLEET_STORE_ROOT", raising=False)
    p = FleetPaths()
    assert p.landing() == str(tmp_path / "L")
    assert Path(p.store()).parts[-2:] == ("demo_out", "store")
    assert FleetPaths(landing_root="/x").landing() == "/x"
    assert FleetPaths(landing_root="s3://fleet/landing").landing() == "s3://fleet/landing"  # a URI stays a URI
    # a store on object storage is kept as a URI; the pictures then go to a local folder
    s3 = FleetPaths(store_root="s3://fleet/store")
    assert s3.store() == "s3://fleet/store" and s3.reports().parts[-2:] == ("demo_out", "reports")
    assert FleetPaths(store_root=str(tmp_path / "S")).reports() == tmp_path / "S" / "reports"


def test_home_writes_an_instance_config_dagster_reads(tmp_path):
    path = write_home(tmp_path / "home", decode_limit=3, max_concurrent_runs=1)
    with dg.instance_for_test(temp_dir=str(tmp_path / "home"), overrides=yaml.safe_load(path.read_text())) as inst:
        cfg = inst.get_concurrency_config()
        assert cfg.pool_config.default_pool_limit == 3
        assert cfg.run_queue_config.max_concurrent_runs == 1


# --------------------------------------------------------------------------------------
# Sensor and schedules (small hand-made drives: fast)
# --------------------------------------------------------------------------------------
DAY_NS = 86_400 * 10**9


def _sensor(landing: Path):
    parts = drive_date_partitions()
    return landing_sensor(curate_job(parts), parts)


def _tick(sensor, landing: Path, cursor: str | None, instance: dg.DagsterInstance | None = None, store: Path | None = None):
    paths = FleetPaths(landing_root=str(landing), store_root=str(store) if store else "")
    with dg.build_sensor_context(instance=instance or dg.DagsterInstance.ephemeral(), cursor=cursor, resources={"paths": paths}) as ctx:
        res = sensor(ctx)
    return res


def _instance_with(*dates: str) -> dg.DagsterInstance:
    """An ephemeral instance whose drive-date partitions are ``dates`` (what the sensors add)."""
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions(DRIVE_DATES, list(dates))
    return inst


def _added(res) -> list[str]:
    return sorted(k for r in res.dynamic_partitions_requests for k in r.partition_keys)


def test_sensor_requests_each_new_drive_once_and_waits_for_complete_uploads(tmp_path, make_drive):
    landing = tmp_path / "landing"
    sensor = _sensor(landing)
    make_drive(landing, "veh-a", "drive-1")
    res = _tick(sensor, landing, None)
    assert [(r.partition_key, r.tags["fleet/new_drives"]) for r in res.run_requests] == [("2025-11-20", "1")]
    assert _added(res) == ["2025-11-20"]  # the date's partition is added with the request
    assert _added(_tick(sensor, landing, None, _instance_with("2025-11-20"))) == []  # not twice
    cursor = res.cursor
    assert len(read_cursor(cursor)) == 1

    res = _tick(sensor, landing, cursor)  # same drive again: nothing
    assert res.run_requests == []
    cursor = res.cursor

    d2 = make_drive(landing, "veh-b", "drive-2", finish=False)  # upload in progress: nothing
    res = _tick(sensor, landing, cursor)
    assert res.run_requests == []
    assert res.cursor == cursor

    (d2 / UPLOAD_COMPLETE).write_text("")  # now complete: requested once
    make_drive(landing, "veh-c", "drive-3", t0_ns=5 * 10**9 + DAY_NS)  # a drive of the next day
    res = _tick(sensor, landing, cursor)
    assert sorted((r.partition_key, r.tags["fleet/new_drives"]) for r in res.run_requests) == [("2025-11-20", "1"), ("2025-11-21", "1")]
    assert len({r.run_key for r in res.run_requests}) == 2
    res = _tick(sensor, landing, res.cursor)
    assert res.run_requests == []


def test_sensor_reads_a_landing_zone_behind_a_uri(tmp_path, make_drive):
    """A landing zone in object storage (fsspec's memory filesystem stands in for S3) is scanned and
    dated like a local one: manifest and telemetry statistics are read in place."""
    import fsspec

    local = tmp_path / "landing"
    make_drive(local, "veh-a", "drive-1")
    make_drive(local, "veh-c", "drive-3", t0_ns=5 * 10**9 + DAY_NS)
    make_drive(local, "veh-d", "drive-4", finish=False)  # still uploading
    fs = fsspec.filesystem("memory")
    fs.put(str(local), "sensor-landing", recursive=True)
    try:
        uri = "memory://sensor-landing"
        res, ref = _tick(_sensor(uri), uri, None), _tick(_sensor(local), local, None)
        want = [("2025-11-20", "1"), ("2025-11-21", "1")]
        assert sorted((r.partition_key, r.tags["fleet/new_drives"]) for r in res.run_requests) == want
        assert sorted((r.partition_key, r.tags["fleet/new_drives"]) for r in ref.run_requests) == want
        assert res.cursor == ref.cursor
    finally:
        fs.rm("sensor-landing", recursive=True)


def test_sensor_dates_drives_from_manifest_and_telemetry_statistics(tmp_path, make_drive):
    d = make_drive(tmp_path / "landing", "veh-a", "drive-1", t0_ns=7 * 10**9)
    assert drive_start_ns(d, read_manifest(d)) == 7 * 10**9
    video_only = make_drive(tmp_path / "landing", "veh-a", "drive-2", telemetry=None, t0_ns=9 * 10**9)
    assert drive_start_ns(video_only, read_manifest(video_only)) == 9 * 10**9


def test_sensor_adds_partitions_for_old_imported_drives_and_skips_bad_manifests(tmp_path, make_drive):
    """Partitions follow the data: a drive imported from 2016 gets its own date partition."""
    from fleetcore.simulate import simulate_drive

    landing = tmp_path / "landing"
    sensor = _sensor(landing)
    make_drive(landing, "veh-a", "drive-1")
    bad = make_drive(landing, "veh-a", "drive-2")
    (bad / "manifest.json").write_text("{not json")
    old = simulate_drive(landing, "veh-old", cameras=1, width=64, height=48, fps=5.0, duration_s=2.0, seed=1, start_date="2016-03-04")
    res = _tick(sensor, landing, None)
    assert sorted(r.partition_key for r in res.run_requests) == ["2016-03-04", "2025-11-20"] == _added(res)
    assert old.drive_id
    # the undatable drive is remembered (reported once): 2 requested + 1 bad
    assert len(read_cursor(res.cursor)) == 3
    # a static partitions definition still bounds what is requested
    daily = dg.DailyPartitionsDefinition(start_date="2020-01-01")
    res = _tick(landing_sensor(curate_job(daily), daily), landing, None)
    assert [r.partition_key for r in res.run_requests] == ["2025-11-20"] and _added(res) == []


def test_landing_dates_become_partitions_by_hand(tmp_path, make_drive):
    from dagster_project.partitions import add_landing_dates

    landing = tmp_path / "landing"
    make_drive(landing, "veh-a", "drive-1")
    make_drive(landing, "veh-b", "drive-2", t0_ns=5 * 10**9 + DAY_NS)
    inst = _instance_with("2025-11-20")
    assert add_landing_dates(inst, str(landing)) == ["2025-11-21"]
    assert sorted(inst.get_dynamic_partitions(DRIVE_DATES)) == ["2025-11-20", "2025-11-21"]
    assert add_landing_dates(inst, str(landing)) == []


def test_nightly_schedule_curates_yesterday():
    repo = defs.get_repository_def()
    sched = repo.get_schedule_def("nightly_curate")
    when = dt.datetime(2026, 11, 21, 2, 0, tzinfo=dt.timezone.utc)
    with dg.instance_for_test() as inst:  # schedules reach the instance by reference: not an ephemeral one
        inst.add_dynamic_partitions(DRIVE_DATES, ["2026-11-19"])
        # no drive of that date landed (no partition): skipped
        tick = sched.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when, repository_def=repo, instance=inst))
        assert not tick.run_requests and "no drives dated 2026-11-20" in tick.skip_message
        inst.add_dynamic_partitions(DRIVE_DATES, [DATE])
        tick = sched.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when, repository_def=repo, instance=inst))
        assert tick.run_requests[0].partition_key == DATE


# --------------------------------------------------------------------------------------
# Assets on a simulated fleet (real Beam run)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from fleetcore.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("fleet") / "landing"
    simulate_fleet(root, vehicles=2, drives_per_vehicle=1, cameras=2, width=320, height=180, fps=10.0, duration_s=30.0, seed=7)
    return root


@pytest.fixture(scope="module")
def curate_run_config(tmp_path_factory) -> dg.RunConfig:
    """Labels + privacy, privacy detecting on every 10th frame (from an options file) to keep the tests short."""
    priv = tmp_path_factory.mktemp("options") / "privacy.yaml"
    priv.write_text("detect_every: 10\n")
    return dg.RunConfig(ops={"curate": A.CurateRunConfig(privacy_config=str(priv))})


@pytest.fixture(scope="module")
def dagster_instance():
    """The instance of the module's curate runs, with the partition of DATE (as the landing sensor adds it)."""
    return _instance_with(DATE)


@pytest.fixture(scope="module")
def curated(fleet, curate_run_config, dagster_instance, tmp_path_factory):
    """The curate partition materialised through Dagster with ``curate_run_config``."""
    tmp = tmp_path_factory.mktemp("curated")
    paths = FleetPaths(landing_root=str(fleet), store_root=str(tmp / "store"), datasets_root=str(tmp / "datasets"))
    resources = {"paths": paths, "beam": BeamRunner(), "limits": QualityThresholds(), "pipes": BeamPipesClient()}
    result = dg.materialize([A.landing_drives, A.build_curate_assets(drive_date_partitions()), *CHECKS], instance=dagster_instance,
                            partition_key=DATE, resources=resources, selection=CURATE_KEYS, run_config=curate_run_config)
    return paths, resources, result


def _md(result, key: dg.AssetKey) -> dict:
    evs = [e.materialization for e in result.get_asset_materialization_events() if e.materialization.asset_key == key]
    assert len(evs) == 1, key
    return {k: v.value for k, v in evs[0].metadata.items()}


def _png_from_md(md_text: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert md_text.startswith("![") and prefix in md_text
    b64 = md_text.split(prefix, 1)[1].rstrip(")")
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.size
    return img


@pytest.mark.slow
def test_curate_partition_materialises_with_numeric_metadata(curated):
    paths, _, result = curated
    assert result.success
    drives = _md(result, A.CURATED)
    assert drives["drives"] == 2 and drives["drives_curated_this_run"] == 2 and drives["quarantined_this_run"] == 0
    assert drives["runner"] == "FnApiRunner"
    assert drives["video_seconds"] > 0 and drives["telemetry_rows"] > 0
    store = _md(result, A.CLIP_STORE)
    assert store["clips"] > 0 and store["frames_decoded"] > 0 and store["frames_per_second"] > 0 and store["bytes_written"] > 0
    assert isinstance(store["frames_per_second"], float) and isinstance(store["clips"], int)
    sheet = _png_from_md(store["contact_sheet"])
    assert sheet.shape[0] > 50 and sheet.std() > 5  # real pixels, not a blank canvas
    assert Path(store["contact_sheet_path"]).read_bytes().startswith(b"\x89PNG")
    trig = _md(result, A.TRIGGERS)
    assert trig["events"] > 0
    _png_from_md(trig["trigger_chart"])
    cat = _md(result, A.CLIP_CATALOG)
    assert cat["clips"] == store["clips"] and cat["labelled_clips"] == cat["clips"]
    _png_from_md(cat["label_distribution"])
    assert str(cat["snapshot_id"]).startswith("snap-")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"quarantine_rate", "telemetry_coverage", "clips_per_trigger", "labeller_coverage", "shard_checksums",
                           "quarantine_this_run"}  # the last reported by the curate job itself, over Pipes
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}


@pytest.mark.slow
def test_landing_observation_and_rerun_is_idempotent(curated, curate_run_config, dagster_instance):
    paths, resources, _ = curated
    res = dg.materialize([A.landing_drives, A.build_curate_assets(drive_date_partitions())], partition_key=DATE, instance=dagster_instance,
                         resources=resources, selection=CURATE_KEYS, run_config=curate_run_config)
    md = _md(res, A.CURATED)
    assert md["config_version"] == _md(curated[2], A.CURATED)["config_version"]
    assert md["drives"] == 2 and md["drives_curated_this_run"] == 0  # already curated with this config: nothing redone
    # the observation (observed, not produced) reports counts; dagster exports no public in-process
    # observe(), so use the one `dagster dev` uses for "Observe sources"
    from dagster._core.definitions.observe import observe

    r = observe([A.landing_drives], resources={"paths": paths})
    (obs,) = r.asset_observations_for_node(r.job_def.nodes[0].name)
    out_md = {k: v.value for k, v in obs.metadata.items()}
    assert out_md["complete_drives"] == 2 and out_md["incomplete_uploads"] == 0 and out_md["vehicles"] == 2


def _store_sensor():
    return store_sensor(drive_date_partitions(), CURATE_KEYS)


@pytest.mark.slow
def test_store_sensor_reports_a_store_curated_outside_dagster(curated, dagster_instance, tmp_path):
    from dagster_project.store_sync import DIGEST_KEY

    paths, _, result = curated
    store = Path(paths.store())
    assert _md(result, A.CLIP_STORE)[DIGEST_KEY]
    # Dagster's own run wrote the partition: nothing to report
    res = _tick(_store_sensor(), Path(paths.landing_root), None, dagster_instance, store)
    assert res.asset_events == [] and json.loads(res.cursor)["dates"][DATE] == _md(result, A.CLIP_STORE)[DIGEST_KEY]
    # the same store seen by an instance that never ran it (written by `fleet curate` / `make demo`)
    inst = dg.DagsterInstance.ephemeral()
    res = _tick(_store_sensor(), Path(paths.landing_root), None, inst, store)
    assert sorted(e.asset_key.to_user_string() for e in res.asset_events) == sorted(k.to_user_string() for k in CURATE_KEYS)
    assert {e.partition for e in res.asset_events} == {DATE} and _added(res) == [DATE]
    md = {k: v.value for k, v in res.asset_events[0].metadata.items()}
    assert md["drives"] == 2 and md["clips"] > 0 and md["store_revision"] >= 1
    # what the daemon does with the result: the partition exists and shows as materialised
    inst.add_dynamic_partitions(DRIVE_DATES, _added(res))
    for ev in res.asset_events:
        inst.report_runless_asset_event(ev)
    assert inst.get_materialized_partitions(A.CLIP_STORE) == {DATE}
    # next tick: same manifest, nothing new
    again = _tick(_store_sensor(), Path(paths.landing_root), res.cursor, inst, store)
    assert again.asset_events == []


@pytest.fixture
def bad_store(curated, tmp_path):
    paths, _, _ = curated
    store = tmp_path / "store"
    shutil.copytree(paths.store(), store)
    return FleetPaths(landing_root=paths.landing_root, store_root=str(store), datasets_root=str(tmp_path / "ds"))


@pytest.mark.slow
def test_checks_fail_on_planted_bad_data(bad_store):
    from dataclasses import replace

    from fleetcore.clips import write_quarantine
    from fleetcore.store.layout import StoreLayout
    from fleetcore.store.manifest import commit, read_manifest as read_store_manifest
    from fleetcore.errors import DriveError
    from fleetcore.ingest.validate import quarantine_record

    limits = QualityThresholds()
    store = Path(bad_store.store())
    # one quarantined drive beside two curated ones: 33 % > 20 % -> ERROR
    rec = quarantine_record("/landing/veh-x/d1", DriveError("cameras/front/000.mp4", "moov atom not found", code="video_truncated"),
                            vehicle_id="veh-x", drive_id="d1")
    write_quarantine(StoreLayout(str(store)), rec)
    q = quarantine_rate(bad_store, limits)
    assert not q.passed and q.severity == dg.AssetCheckSeverity.ERROR and q.metadata["drives_quarantined"].value == 1
    q = quarantine_rate(bad_store, QualityThresholds(quarantine_warn=0.1, quarantine_error=0.5))
    assert not q.passed and q.severity == dg.AssetCheckSeverity.WARN

    # flip one byte of a shard -> shard checksums ERROR naming the shard
    assert shard_checksums(bad_store).passed
    shard = sorted((store / "clips").glob("date=*/*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    s = shard_checksums(bad_store)
    assert not s.passed and s.severity == dg.AssetCheckSeverity.ERROR and shard.name in s.description

    # telemetry gaps above the threshold -> WARN
    t = telemetry_coverage(bad_store, QualityThresholds(telemetry_max_gap_s=1e-6))
    assert not t.passed and t.severity == dg.AssetCheckSeverity.WARN and "gaps" in t.description

    # clips-per-event band that nothing meets -> WARN
    c = clips_per_trigger(bad_store, QualityThresholds(clips_per_event_min=5.0, clips_per_event_max=6.0))
    assert not c.passed and c.severity == dg.AssetCheckSeverity.WARN

    # no labels table -> WARN saying so
    layout = StoreLayout(str(store))
    commit(layout, add=[replace(g, tables=tuple((t, r) for t, r in g.tables if t not in ("labels", "clip_labels")))
                        for g in read_store_manifest(layout).current()])
    lab = labeller_coverage(bad_store, limits)
    assert not lab.passed and lab.severity == dg.AssetCheckSeverity.WARN and "no labels table" in lab.description


def _spec(path: Path, **sel) -> None:
    doc = {"name": path.stem, "cameras": ["front"], "frames_per_clip": 3, "frame_rate_hz": 2.0, "resolution": [96, 64], **sel}
    path.write_text(yaml.safe_dump(doc))


def _dataset_run(spec_dir: Path, name: str, paths: FleetPaths):
    asset = A.dataset_asset(spec_dir / f"{name}.yaml")
    return dg.materialize([asset], resources={"paths": paths, "beam": BeamRunner(), "pipes": BeamPipesClient()}, raise_on_error=False)


def _gate(result) -> dg.AssetCheckEvaluation:
    (ev,) = [e for e in result.get_asset_check_evaluations() if e.check_name == A.PREFLIGHT_CHECK]
    return ev


@pytest.mark.slow
def test_dataset_gate_blocks_an_empty_selection(curated, tmp_path):
    paths, _, _ = curated
    _spec(tmp_path / "nothing.yaml", sql="SELECT * FROM clips WHERE duration_s < 0")
    res = _dataset_run(tmp_path, "nothing", paths)
    assert not res.success
    gate = _gate(res)
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR and "empty" in gate.description
    assert res.get_asset_materialization_events() == []


@pytest.mark.slow
def test_dataset_gate_blocks_clips_curated_with_privacy_off(fleet, tmp_path):
    paths = FleetPaths(landing_root=str(fleet), store_root=str(tmp_path / "store"), datasets_root=str(tmp_path / "ds"))
    res = dg.materialize([A.build_curate_assets(drive_date_partitions())], partition_key=DATE, instance=_instance_with(DATE),
                         resources={"paths": paths, "beam": BeamRunner(), "pipes": BeamPipesClient()},
                         run_config=dg.RunConfig(ops={"curate": A.CurateRunConfig(labels=False, privacy=False)}))
    assert res.success
    # privacy_required (the default): the builder refuses every clip -> empty selection, blocked
    _spec(tmp_path / "all.yaml", sql="SELECT * FROM clips")
    res = _dataset_run(tmp_path, "all", paths)
    gate = _gate(res)
    assert not res.success and not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert "empty" in gate.description and "privacy off" in gate.description
    # privacy_required: false would build them: blocked all the same
    _spec(tmp_path / "lax.yaml", sql="SELECT * FROM clips", privacy_required=False)
    res = _dataset_run(tmp_path, "lax", paths)
    gate = _gate(res)
    assert not res.success and not gate.passed and "privacy off" in gate.description
    assert gate.metadata["clips_without_privacy"].value == gate.metadata["selected_clips"].value > 0
    assert not (paths.datasets() / "lax").exists()


def _have_builder() -> bool:
    try:
        from pipelines.build_dataset import run_build_dataset  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_mining_job_from_run_config(curated):
    paths, resources, _ = curated
    cfg = MineConfig(query="SELECT * FROM clips", dataset_name="mined_all", frames_per_clip=2, resolution=[96, 64])
    res = mine_dataset.execute_in_process(run_config=dg.RunConfig(ops={"mine": cfg}), resources=resources, raise_on_error=False)
    spec = paths.datasets() / "_mined_specs" / "mined_all.yaml"
    assert yaml.safe_load(spec.read_text())["sql"] == "SELECT * FROM clips"
    if not _have_builder():
        assert not res.success
        failure = [e for e in res.all_events if e.is_step_failure][0]
        assert "pipelines.build_dataset is not available" in failure.step_failure_data.error.message
        return
    assert res.success, [e.message for e in res.all_events if e.is_failure]
    mats = [e for e in res.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert mats and mats[0].asset_key == dg.AssetKey(["mined", "mined_all"])
    md = {k: v.value for k, v in mats[0].step_materialization_data.materialization.metadata.items()}
    assert md["samples"] > 0 and md["shards"] >= 1
    assert Path(md["manifest"]).is_file()


@pytest.mark.slow
def test_dataset_asset_builds_when_the_gate_passes(curated, tmp_path):
    if not _have_builder():
        pytest.skip("pipelines.build_dataset is not in this checkout yet")
    paths, _, _ = curated
    _spec(tmp_path / "every.yaml", where="duration_s > 0")
    res = _dataset_run(tmp_path, "every", paths)
    assert res.success, [e.message for e in res.all_events if e.is_failure]
    assert _gate(res).passed
    md = _md(res, dg.AssetKey("dataset_every"))
    _png_from_md(md["contact_sheet"])
    assert md["selected_clips"] > 0 and md["samples"] == md["selected_clips"] and md["shards"] >= 1
    # built out of process through Pipes: the job's Beam counters and its own check came back
    assert md["beam/samples_rendered"] == md["samples"] and md["beam/shards_written"] == md["shards"]
    assert {e.check_name: e.passed for e in res.get_asset_check_evaluations()}[A.DATASET_VERIFIED_CHECK] is True
    from fleetcore.datasets.manifest import verify_dataset

    assert verify_dataset(md["dataset_path"]) == []
    # the same spec over the same catalog is the same version: nothing rebuilt
    again = _md(_dataset_run(tmp_path, "every", paths), dg.AssetKey("dataset_every"))
    assert again["version"] == md["version"] and again["built_now"] == "False"


@pytest.mark.slow
def test_coverage_report_materialises(curated):
    paths, resources, _ = curated
    res = dg.materialize([A.coverage_report], resources=resources)
    assert res.success
    md = _md(res, A.COVERAGE)
    assert md["clips_total"] > 0
    assert md["source"] == "fleetcore.query.coverage" and md["cells"] > 0
    _png_from_md(md["heatmap"])
