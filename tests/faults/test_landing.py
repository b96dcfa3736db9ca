"""Landing-zone faults: one landing zone holds every bad drive of the table beside good simulated
drives and an unfinished upload; one curate run over it. Each bad drive must be quarantined with its
code, every good drive curated, the unfinished one reported incomplete, and the store must verify."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import build_drive, encode_testsrc, telemetry_table
from fleetcore.clips import CurateConfig
from fleetcore.ingest.report import validate_landing
from fleetcore.landing.drives import list_drives
from fleetcore.store.fs import sha256_file
from fleetcore.store.layout import StoreLayout
from fleetcore.store.manifest import read_manifest
from pipelines.curate import DEFAULT_RUNNER, run_curate

from . import plants as P

pytestmark = pytest.mark.slow

NS = 1_000_000_000
T0 = 5 * NS

#: (fault, how it is planted into a good drive, the quarantine code it must get)
LANDING_FAULTS = [
    # video files
    ("video_zero_bytes", P.video_bytes(b""), "video_empty"),
    ("video_truncated_half", P.truncate(0.5), "video_truncated"),
    ("video_truncated_header", P.truncate(0.02), "video_truncated"),
    ("video_text_named_mp4", P.video_bytes(b"this is not a video, just some text\n" * 20), "video_not_media"),
    ("video_random_bytes", P.video_bytes(bytes(np.random.default_rng(1).integers(0, 256, 40_000, dtype=np.uint8))), "video_not_media"),
    ("video_ftyp_then_garbage", P.video_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\xab" * 5000), "video_truncated"),
    ("video_audio_only", P.audio_only, "video_no_stream"),
    ("video_png_named_mp4", P.png_as_mp4, "video_no_stream"),
    ("video_missing_file", P.remove(P.FRONT), "camera_file_missing"),
    ("video_second_camera_missing", P.remove("cameras/left/000.mp4"), "camera_file_missing"),
    ("video_moov_damaged", P.flip_bytes(P.FRONT, 0.97, 200), "video_no_stream"),
    # paths
    ("path_dotdot", P.edit_manifest(lambda m: m["cameras"][0]["files"][0].update(path="../../../etc/passwd")), "path_escape"),
    ("path_absolute", P.edit_manifest(lambda m: m["cameras"][0]["files"][0].update(path="/etc/passwd")), "path_escape"),
    ("path_symlink_out", P.symlink_out(), "path_escape"),
    ("path_telemetry_dotdot", P.edit_manifest(lambda m: m["telemetry"].update(path="../../other/telemetry.parquet")), "path_escape"),
    # manifests
    ("manifest_not_json", lambda d: (d / "manifest.json").write_text("{not json"), "manifest_invalid"),
    ("manifest_empty_file", lambda d: (d / "manifest.json").write_text(""), "manifest_invalid"),
    ("manifest_json_list", lambda d: (d / "manifest.json").write_text("[1, 2, 3]"), "manifest_invalid"),
    ("manifest_missing", lambda d: (d / "manifest.json").unlink(), "manifest_missing"),
    ("manifest_no_utc_offset", P.edit_manifest(lambda m: m.pop("utc_offset_ns")), "manifest_invalid"),
    ("manifest_cameras_not_list", P.edit_manifest(lambda m: m.update(cameras="front")), "manifest_invalid"),
    ("manifest_start_ns_string", P.edit_manifest(lambda m: m["cameras"][0]["files"][0].update(start_ns="soon")), "manifest_invalid"),
    ("manifest_camera_no_files", P.edit_manifest(lambda m: m["cameras"][0].update(files=[])), "manifest_invalid"),
    ("manifest_duplicate_camera", P.edit_manifest(lambda m: m["cameras"].append(dict(m["cameras"][0]))), "manifest_invalid"),
    ("manifest_camera_name_slash", P.edit_manifest(lambda m: m["cameras"][0].update(name="../front")), "manifest_invalid"),
    ("manifest_future_format", P.edit_manifest(lambda m: m.update(format_version=99)), "manifest_invalid"),
    ("manifest_other_vehicle", P.edit_manifest(lambda m: m.update(vehicle_id="someone-else")), "manifest_invalid"),
    ("manifest_telemetry_format", P.edit_manifest(lambda m: m["telemetry"].update(format="xlsx")), "manifest_invalid"),
    ("manifest_nothing_in_it", P.edit_manifest(lambda m: m.update(cameras=[], telemetry=None)), "drive_empty"),
    # raw streams with frame-times files
    ("raw_frame_times_short", P.raw_stream(np.arange(7, dtype=np.int64)), "frame_times_invalid"),
    ("raw_frame_times_unsorted", P.raw_stream((T0 + np.arange(30, dtype=np.int64) * 100_000_000)[::-1].copy()), "video_frame_times_invalid"),
    ("raw_frame_times_file_missing", P.raw_stream(None), "frame_times_missing"),
    # telemetry
    ("telemetry_nan", P.telemetry_with(speed_mps=P.at(10, np.nan)), "telemetry_nan"),
    ("telemetry_unsorted", P.telemetry_with(t_ns=P.swap(20)), "telemetry_unsorted"),
    ("telemetry_duplicate_timestamp", P.telemetry_with(t_ns=P.at(31, T0 + 30 * 20_000_000), speed_mps=P.at(31, 13.0)), "telemetry_duplicate_timestamp"),
    ("telemetry_absurd_speed", P.telemetry_with(speed_mps=P.at(40, 1e9)), "telemetry_out_of_range"),
    ("telemetry_absurd_latitude", P.telemetry_with(lat_deg=P.at(40, 123.0)), "telemetry_out_of_range"),
    ("telemetry_no_overlap", P.telemetry(telemetry_table(500 * NS, 3.0)), "telemetry_no_overlap"),
    ("telemetry_not_parquet", P.telemetry(raw=b"PAR1 but not really" * 10), "telemetry_unreadable"),
    ("telemetry_truncated", P.truncate(0.5, "telemetry.parquet"), "telemetry_unreadable"),
    ("telemetry_empty_table", P.telemetry(telemetry_table(T0, 0.0)), "telemetry_empty"),
    ("telemetry_missing_file", P.remove("telemetry.parquet"), "telemetry_missing"),
    ("telemetry_time_as_text", P.telemetry(telemetry_table(T0, 3.0).set_column(0, "t_ns", __import__("pyarrow").array([f"t+{i}" for i in range(150)]))), "telemetry_schema"),
    ("telemetry_no_time_column", P.telemetry(telemetry_table(T0, 3.0).drop_columns(["t_ns"])), "telemetry_schema"),
]

GOOD_VEHICLES = 2


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    """The landing zone of every fault beside good drives, validated and curated once."""
    from fleetcore.simulate import simulate_fleet

    tmp = tmp_path_factory.mktemp("faults")
    landing = tmp / "zone" / "landing"
    simulate_fleet(landing, vehicles=GOOD_VEHICLES, drives_per_vehicle=1, cameras=1, width=320, height=180, fps=10.0,
                   duration_s=12.0, seed=11)
    clip = encode_testsrc(tmp / "clip.mp4")
    for name, plant, _code in LANDING_FAULTS:
        plant(build_drive(clip, landing, "veh-fault", name))
    build_drive(clip, landing, "veh-fault", "unfinished_upload", finish=False)
    report = validate_landing(landing)
    store = tmp / "store"
    summary = run_curate(str(landing), str(store), CurateConfig(stages=()), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return landing, store, report, summary


def _quarantined(summary) -> dict[str, str]:
    return {q["path"].rstrip("/").rsplit("/", 1)[-1]: q["code"] for q in summary["quarantined"] if not q.get("clip_id")}


@pytest.mark.parametrize("name, plant, code", LANDING_FAULTS, ids=[f[0] for f in LANDING_FAULTS])
def test_landing_fault_is_quarantined_with_its_code(fleet_run, ledger, name, plant, code):
    _landing, _store, report, summary = fleet_run
    by_validate = {q["drive_id"]: q["code"] for q in report.quarantined}
    by_curate = _quarantined(summary)
    got = by_curate.get(name)
    ledger.record(f"landing/{name}", "handled" if got == code else ("lost" if got is None else "wrong"))
    assert by_validate.get(name) == code, f"validate: {by_validate.get(name)!r}"
    assert got == code, f"curate: {got!r}"


def test_every_landing_drive_is_accounted_for(fleet_run, ledger):
    landing, store, report, summary = fleet_run
    drives = {(r.vehicle_id, r.drive_id) for r in list_drives(landing, include_incomplete=True)}
    current = {(g.vehicle_id, g.drive_id) for g in read_manifest(StoreLayout(str(store))).current()}
    quarantined = {("veh-fault", d) for d in _quarantined(summary)}
    incomplete = {tuple(k.split("/", 1)) for k in report.incomplete}
    lost = drives - current - quarantined - incomplete
    ledger.record("landing/accounting", "handled" if not lost else "lost")
    assert not lost
    assert len(current) == GOOD_VEHICLES and summary["clips"] > 0
    assert incomplete == {("veh-fault", "unfinished_upload")}


def test_store_verifies_after_the_faults(fleet_run, ledger):
    _landing, store, _report, _summary = fleet_run
    layout = StoreLayout(str(store))
    bad = [s["name"] for s in read_manifest(layout).shards() if sha256_file(layout.shard_path(s["name"])) != s["sha256"]]
    ledger.record("landing/store_verifies", "handled" if not bad else "lost")
    assert not bad
