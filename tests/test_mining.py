"""fleet mine: read-only SQL over a real clip store (simulated fleet -> curate job)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import av
import cv2
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from fleetcore.store.catalog import Catalog
from fleetcore.query.mining import Filters, MiningError, MiningSession, check_query, run_query

pytestmark = pytest.mark.slow


def write_test_labels(store: Path, landing: Path, add_labels) -> None:
    """Extra LABELS rows (labeller "test") for every clip: gt_time_of_day from the ground truth, test_pedestrians
    (value + score), test_sharpness (score only), beside whatever the curate job's labels stage wrote."""
    clips = Catalog(str(store)).read("clips").sort("clip_id")
    gts = {}
    for f in landing.glob("*/*/ground_truth.json"):
        d = json.loads(f.read_text())
        gts[d["drive_id"]] = d
    rows: list[dict] = []
    for i, r in enumerate(clips.iter_rows(named=True)):
        tod = next(c["value"] for c in gts[r["drive_id"]]["conditions"] if c["type"] == "time_of_day")
        rows.extend([
            {"clip_id": r["clip_id"], "labeller": "test", "labeller_version": "1", "label": "gt_time_of_day", "value": tod, "score": None},
            {"clip_id": r["clip_id"], "labeller": "test", "labeller_version": "1", "label": "test_pedestrians", "value": str(i % 3), "score": float(i % 3)},
            {"clip_id": r["clip_id"], "labeller": "test", "labeller_version": "1", "label": "test_sharpness", "value": None, "score": 10.0 + i},
        ])
    add_labels(store, rows)


def build_store(tmp: Path) -> tuple[Path, Path]:
    from fleetcore.clips import CurateConfig
    from fleetcore.simulate import simulate_fleet
    from pipelines.curate import run_curate

    landing, store = tmp / "landing", tmp / "store"
    simulate_fleet(landing, vehicles=2, drives_per_vehicle=2, cameras=2, width=320, height=180, fps=10.0, duration_s=30.0, seed=7, workers=1)
    cfg = CurateConfig(stages=("labels",))
    run_curate(str(landing), str(store), cfg, beam_args=["--runner=FnApiRunner"])
    return landing, store


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, store_labels):
    landing, store = build_store(tmp_path_factory.mktemp("mining"))
    write_test_labels(store, landing, store_labels)
    return landing, store


def ground_truth(landing: Path) -> list[dict]:
    out = []
    for f in sorted(landing.glob("*/*/ground_truth.json")):
        d = json.loads(f.read_text())
        for e in d["events"]:
            out.append({**e, "drive_id": d["drive_id"]})
    return out


def test_query_per_trigger_matches_catalog_and_ground_truth(fleet):
    landing, store = fleet
    clips = Catalog(str(store)).read("clips")
    session = MiningSession.open(store)
    gt = ground_truth(landing)
    types = sorted({e["type"] for e in gt})
    assert len(types) >= 8
    for trig in types:
        got = session.query(f"SELECT clip_id, drive_id, start_ns, end_ns FROM clips WHERE array_contains(triggers, '{trig}') ORDER BY clip_id")
        want = sorted(r["clip_id"] for r in clips.iter_rows(named=True) if trig in r["triggers"])
        assert got["clip_id"].to_list() == want, trig
        # every ground-truth event of this type lies in (overlaps) a returned clip of its drive, and every clip covers one
        events = [e for e in gt if e["type"] == trig]
        for e in events:
            hit = got.filter((pl.col("drive_id") == e["drive_id"]) & (pl.col("start_ns") <= e["end_ns"]) & (pl.col("end_ns") >= e["start_ns"]))
            assert hit.height >= 1, (trig, e)
        for r in got.iter_rows(named=True):
            assert any(e["drive_id"] == r["drive_id"] and r["start_ns"] <= e["end_ns"] and r["end_ns"] >= e["start_ns"] for e in events)


def test_tables_registered(fleet):
    _, store = fleet
    s = MiningSession.open(store)
    assert set(s.frames) == {"clips", "labels", "clip_labels", "triggers", "drives", "telemetry_summary", "near_duplicates",
                            "predictions"}
    assert s.query("SELECT count(*) AS n FROM triggers").item() == Catalog(str(store)).read("triggers").height
    assert s.query("SELECT count(*) AS n FROM drives").item() == 4
    ts = s.query("SELECT clip_id, speed_max_kmh, speed_max_mps, lat_centre FROM telemetry_summary")
    assert ts.height == Catalog(str(store)).read("clips").height
    assert np.allclose(ts["speed_max_kmh"].to_numpy(), ts["speed_max_mps"].to_numpy() * 3.6)


def test_missing_tables_are_empty_with_contract_schema(tmp_path, fleet):
    _, store = fleet
    bare = tmp_path / "bare"
    (bare / "catalog").mkdir(parents=True)
    s = MiningSession.open(bare)
    assert s.query("SELECT * FROM labels").columns == ["clip_id", "labeller", "labeller_version", "label", "value", "score", "date"]
    assert s.query("SELECT clip_id, triggers FROM clips").height == 0
    assert s.query("SELECT * FROM clip_labels").columns == ["clip_id"]


def test_label_queries(fleet):
    landing, store = fleet
    s = MiningSession.open(store)
    night_drives = {json.loads(f.read_text())["drive_id"] for f in landing.glob("*/*/ground_truth.json")
                    if any(c.get("value") == "night" for c in json.loads(f.read_text())["conditions"] if c["type"] == "time_of_day")}
    got = s.query("SELECT c.clip_id, c.drive_id, l.test_pedestrians, l.test_pedestrians_score, l.test_sharpness FROM clips c "
                  "JOIN clip_labels l ON c.clip_id = l.clip_id WHERE l.gt_time_of_day = 'night'")
    assert got.height >= 1 and set(got["drive_id"]) == night_drives
    assert got.schema["test_sharpness"] == pl.Float64 and got.schema["test_pedestrians_score"] == pl.Float64
    assert got.schema["test_pedestrians"] == pl.String
    long = s.query("SELECT clip_id FROM labels WHERE label = 'gt_time_of_day' AND value = 'night' ORDER BY clip_id")
    assert sorted(got["clip_id"]) == long["clip_id"].to_list()


def test_time_filters_prune_partitions(fleet):
    _, store = fleet
    dates = sorted(Catalog(str(store)).read("clips")["date"].unique())
    assert len(dates) == 2
    s = MiningSession.open(store, Filters(since=dates[1]))
    got = s.query("SELECT clip_id, date FROM clips")
    assert set(got["date"]) == {dates[1]}
    plan = s.lazy("SELECT clip_id FROM clips").explain()
    assert f"date={dates[0]}" not in plan and f"date={dates[1]}" in plan
    assert set(MiningSession.open(store, Filters(until=dates[0])).query("SELECT date FROM triggers")["date"]) == {dates[0]}
    # relative: 1d before the end of the second day keeps only it
    now = dt.datetime.fromisoformat(dates[1] + "T23:59:59+00:00")
    rel = MiningSession.open(store, Filters(since="1d", now=now)).query("SELECT clip_id, date FROM clips")
    assert set(rel["date"]) <= set(dates) and rel.height >= 1
    assert MiningSession.open(store, Filters(since="30d", now=now + dt.timedelta(days=400))).query("SELECT * FROM clips").height == 0
    with pytest.raises(MiningError, match="expected a relative age"):
        MiningSession.open(store, Filters(since="yesterday"))


def test_geo_filters(fleet):
    _, store = fleet
    all_ = run_query(store, "SELECT clip_id, lat_min, lat_max, lon_min, lon_max FROM clips")
    r = all_.row(0, named=True)
    lat_c, lon_c = (r["lat_min"] + r["lat_max"]) / 2, (r["lon_min"] + r["lon_max"]) / 2
    near = run_query(store, "SELECT clip_id FROM clips", filters=Filters(near=(lat_c, lon_c, 5_000.0)))
    assert r["clip_id"] in near["clip_id"].to_list() and near.height < all_.height
    box = (r["lon_min"] - 0.01, r["lat_min"] - 0.01, r["lon_max"] + 0.01, r["lat_max"] + 0.01)
    inbox = run_query(store, "SELECT clip_id, lon_min, lon_max FROM clips", filters=Filters(bbox=box))
    assert r["clip_id"] in inbox["clip_id"].to_list() and inbox.height < all_.height
    assert all(lo <= box[2] and hi >= box[0] for lo, hi in inbox.select("lon_min", "lon_max").iter_rows())
    # geo filters reach the clip tables
    labs = run_query(store, "SELECT DISTINCT clip_id FROM labels", filters=Filters(bbox=box))
    assert set(labs["clip_id"]) <= set(inbox["clip_id"])
    far = run_query(store, "SELECT clip_id FROM clips", filters=Filters(near=(0.0, 0.0, 1000.0)))
    assert far.height == 0


def test_cli_outputs(fleet, tmp_path):
    _, store = fleet
    runner = CliRunner()
    from fleet_cli.mine import COMMANDS, mine

    assert {c.name for c in COMMANDS} == {"mine", "triggers", "coverage"}
    q = "SELECT clip_id, primary_trigger, duration_s FROM clips ORDER BY clip_id"
    res = runner.invoke(mine, [q, "--store", str(store), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 8 and set(rows[0]) == {"clip_id", "primary_trigger", "duration_s"}
    out = tmp_path / "res.parquet"
    res = runner.invoke(mine, [q, "--store", str(store), "--parquet", str(out)])
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(out)["clip_id"].to_list() == [r["clip_id"] for r in rows]
    res = runner.invoke(mine, [q, "--store", str(store)])
    assert res.exit_code == 0 and "primary_trigger" in res.output and "8 rows" in res.output
    res = runner.invoke(mine, ["SELECT clip_id FROM clips WHERE array_contains(triggers, 'random_sample')", "--store", str(store), "--count"])
    assert res.exit_code == 0, res.output
    counts = json.loads(res.output)
    assert counts["clips"] == counts["by_trigger"]["random_sample"] >= 1
    assert sum(counts["by_label"]["gt_time_of_day"].values()) == counts["clips"]
    res = runner.invoke(mine, ["SELECT clip_id FROM clips", "--store", str(store), "--bbox", "1,2,3", "--json"])
    assert res.exit_code != 0 and "--bbox" in res.output


def test_preview_png(fleet, tmp_path):
    _, store = fleet
    from fleet_cli.mine import mine

    out = tmp_path / "sheet.png"
    res = CliRunner().invoke(mine, ["SELECT clip_id FROM clips ORDER BY clip_id LIMIT 3", "--store", str(store), "--preview", str(out), "--json"])
    assert res.exit_code == 0, res.output
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 3 * 60 and img.shape[1] >= 6 * 160
    # each strip: 6 thumbnails below a caption; check every thumbnail cell of every strip is not blank
    strip_h = img.shape[0] // 3
    for k in range(3):
        for j in range(6):
            x0 = 6 + j * 166
            cell = img[k * strip_h + 50: (k + 1) * strip_h - 8, x0 + 4: x0 + 156]
            assert cell.std() > 5.0, (k, j)


def test_preview_html_mp4(fleet, tmp_path):
    _, store = fleet
    from fleet_cli.mine import mine

    out = tmp_path / "html"
    res = CliRunner().invoke(mine, ["SELECT clip_id FROM clips ORDER BY clip_id LIMIT 2", "--store", str(store), "--preview", str(out), "--json"])
    assert res.exit_code == 0, res.output
    page = (out / "index.html").read_text()
    mp4s = sorted((out / "clips").glob("*.mp4"))
    assert len(mp4s) == 2
    for p in mp4s:
        assert f'src="clips/{p.name}"' in page
        with av.open(str(p)) as c:
            st = c.streams.video[0]
            assert st.codec_context.name == "h264" and st.codec_context.pix_fmt == "yuv420p"
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) > 10 and frames[len(frames) // 2].std() > 5
        head = p.read_bytes()[:4096]
        assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 10**9)  # +faststart: moov before mdat


def test_read_only_guard(fleet, tmp_path):
    _, store = fleet
    outside = tmp_path / "outside.parquet"
    pl.DataFrame({"secret": [1, 2]}).write_parquet(outside)
    target = tmp_path / "written.csv"
    s = MiningSession.open(store)
    bad = [
        "SELECT * FROM read_parquet('/etc/passwd')",
        "select * from READ_CSV('/etc/passwd')",
        f"SELECT * FROM read_parquet('{outside}')",
        f"SELECT c.clip_id FROM clips c JOIN read_parquet('{outside}') o ON true",
        f"SELECT * FROM '{outside}'",
        f"SELECT * FROM (SELECT * FROM read_ipc('{outside}')) x",
        f"COPY clips TO '{target}'",
        f"COPY (SELECT * FROM clips) TO '{target}' (FORMAT csv)",
        "CREATE TABLE x AS SELECT * FROM clips",
        "INSERT INTO clips SELECT * FROM clips",
        "DROP TABLE clips",
        "SELECT 1; DROP TABLE clips",
        "SELECT * FROM clips; SELECT * FROM drives",
        "SHOW TABLES",
        "SELECT * INTO newtab FROM clips",
    ]
    for q in bad:
        with pytest.raises(MiningError) as ei:
            s.query(q)
        msg = str(ei.value)
        assert "tables:" in msg and "clips(" in msg, q
    assert not target.exists()
    # the guard is also enforced by check_query alone, and the CLI reports it
    with pytest.raises(MiningError, match="read_parquet"):
        check_query("SELECT * FROM read_parquet('/etc/passwd')")
    from fleet_cli.mine import mine

    res = CliRunner().invoke(mine, ["SELECT * FROM read_parquet('/etc/passwd')", "--store", str(store)])
    assert res.exit_code != 0 and "not allowed" in res.output and "root:" not in res.output
    # the tables still answer afterwards
    assert s.query("SELECT count(*) FROM clips").item() == 8


def test_bad_query_error_has_position_and_tables(fleet):
    _, store = fleet
    s = MiningSession.open(store)
    with pytest.raises(MiningError) as ei:
        s.query("SELECT clip_id\nFROM clips\nWHERE no_such_column > 3")
    e = ei.value
    assert (e.line, e.column) == (3, 7)
    assert "no_such_column" in str(e) and "telemetry_summary(" in str(e) and "peak_decel_mps2" in str(e)
    with pytest.raises(MiningError) as ei:
        s.query("SELECT clip_id FROM clips WHERE speed_max_mps >")
    assert ei.value.line == 1 and ei.value.column is not None
    with pytest.raises(MiningError) as ei:
        s.query("SELECT * FROM nosuch")
    assert (ei.value.line, ei.value.column) == (1, 15) and "clip_labels" in str(ei.value)


def test_save_dataset_spec(fleet, tmp_path):
    _, store = fleet
    import yaml

    from fleet_cli.mine import mine

    root = tmp_path / "datasets"
    q = "SELECT c.clip_id FROM clips c JOIN clip_labels l ON c.clip_id = l.clip_id WHERE l.time_of_day = 'day'"
    res = CliRunner().invoke(mine, [q, "--store", str(store), "--save-dataset", "day_clips", "--datasets-root", str(root), "--no-build", "--json"])
    assert res.exit_code == 0, res.output
    spec = yaml.safe_load((root / "specs" / "day_clips.yaml").read_text())
    want = sorted(r["clip_id"] for r in json.loads(res.output[res.output.index("["):]))
    assert spec["name"] == "day_clips" and all(cid in spec["sql"] for cid in want)
    from fleetcore.datasets.spec import load_spec

    assert load_spec(root / "specs" / "day_clips.yaml").sql is not None


def test_save_dataset_builds(fleet, tmp_path):
    _, store = fleet
    from fleet_cli.mine import mine

    root = tmp_path / "datasets"
    q = "SELECT clip_id FROM clips WHERE array_contains(triggers, 'hard_brake') OR array_contains(triggers, 'sharp_turn')"
    res = CliRunner().invoke(mine, [q, "--store", str(store), "--save-dataset", "mined", "--datasets-root", str(root), "--json",
                                    "--frames-per-clip", "2", "--resolution", "64x48", "--no-privacy-required"])
    assert res.exit_code == 0, res.output
    manifests = list((root / "mined").glob("*/manifest.json"))
    assert len(manifests) == 1
    doc = json.loads(manifests[0].read_text())
    assert doc["n_samples"] == 2
    assert f"manifest {manifests[0]}" in res.output


def _label_store(root: Path, parts: dict[str, list[dict]], *, pivot=None) -> None:
    """A store whose drives (one per ``parts`` key) list only LABELS rows and their wide ``clip_labels``
    (``pivot``: how each part is pivoted; default the curate job's)."""
    from fleetcore.clips import clip_labels_table
    from fleetcore.store.fs import write_parquet
    from fleetcore.store.layout import StoreLayout, generation_id
    from fleetcore.store.manifest import Generation, commit
    from schemas import LABELS

    layout = StoreLayout(str(root))
    gen = generation_id("cfg-test")
    gens = []
    for drive, rows in parts.items():
        name = layout.drive_name("veh", drive)
        labels = LABELS.validate(LABELS.from_pylist(rows))
        tables = {}
        for t, data in (("labels", labels), ("clip_labels", (pivot or clip_labels_table)(labels))):
            rel = layout.table_relpath(t, "2024-05-01", name, gen)
            write_parquet(data, layout.resolve(rel))
            tables[t] = rel
        gens.append(Generation("veh", drive, "2024-05-01", "cfg-test", 1, tables=tuple(sorted(tables.items()))))
    commit(layout, add=gens)


def _tel_rows(clip_id: str, elevation: float | None) -> list[dict]:
    return [{"clip_id": clip_id, "labeller": "telemetry", "labeller_version": "1", "label": "sun_elevation_deg", "value": None, "score": elevation},
            {"clip_id": clip_id, "labeller": "telemetry", "labeller_version": "1", "label": "time_of_day",
             "value": "day" if elevation is not None else "unknown", "score": None}]


def test_clip_labels_of_drives_with_and_without_gps_have_one_dtype(tmp_path):
    """A store mixing a drive with GPS (sun elevation known) and one without (every elevation NaN):
    `SELECT * FROM clip_labels` reads one Float64 column (was String in one part, Float64 in the other)."""
    _label_store(tmp_path / "s", {"gps": _tel_rows("c-gps", 41.5), "nogps": _tel_rows("c-nogps", None)})
    cat = Catalog(str(tmp_path / "s"))
    types = {pl.read_parquet(f).schema["sun_elevation_deg"] for f in cat.files("clip_labels")}
    assert types == {pl.Float64}
    out = run_query(tmp_path / "s", "SELECT clip_id, sun_elevation_deg, time_of_day FROM clip_labels ORDER BY clip_id")
    assert out.schema["sun_elevation_deg"] == pl.Float64
    assert out.rows() == [("c-gps", 41.5, "day"), ("c-nogps", None, "unknown")]
    assert run_query(tmp_path / "s", "SELECT * FROM clip_labels").height == 2


def test_clip_labels_written_with_mixed_dtypes_still_read(tmp_path):
    """Stores written before the fix hold an always-unknown numeric label as a String column in some
    parts: the reader takes the type of the parts where it has values (Float64)."""
    from fleetcore.clips import clip_labels_table

    def old_pivot(labels):  # what the curate job wrote before: an all-null label became a String column
        t = clip_labels_table(labels)
        i = t.schema.get_field_index("sun_elevation_deg")
        return t.set_column(i, "sun_elevation_deg", t.column(i).cast("string")) if t.column(i).null_count == t.num_rows else t

    _label_store(tmp_path / "s", {"gps": _tel_rows("c-gps", 41.5), "nogps": _tel_rows("c-nogps", None)}, pivot=old_pivot)
    types = {pl.read_parquet(f).schema["sun_elevation_deg"] for f in Catalog(str(tmp_path / "s")).files("clip_labels")}
    assert types == {pl.Float64, pl.String}
    out = run_query(tmp_path / "s", "SELECT * FROM clip_labels ORDER BY clip_id")
    assert out.schema["sun_elevation_deg"] == pl.Float64 and out["sun_elevation_deg"].to_list() == [41.5, None]
    assert out["time_of_day"].to_list() == ["day", "unknown"]


def test_clip_frames_evenly_spaced_over_several_clips(sim_store):
    """``n`` evenly spaced frames from each of several clips (each clip picks its own positions)."""
    from fleetcore.query.preview import clip_frames

    store, _ = sim_store
    clips = Catalog(store).scan("clips").sort("clip_id").head(3).collect()
    got = clip_frames(store, clips, n=4)
    assert [c.clip_id for c in got] == clips["clip_id"].to_list()
    for c in got:
        assert len(c.frames) == 4 and c.indices[0] == 0 and c.indices == sorted(set(c.indices))
        assert all(f.ndim == 3 and f.shape[2] == 3 for f in c.frames)
