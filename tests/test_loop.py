"""The data-engine loop (issue 23): similarity search, predictions in, disagreement triggers out.

One small simulated fleet (10 vehicles x 3 drives x 40 s, two tiny cameras) curated with the
telemetry labeller only. Predictions of a "planner" model follow the logged driving with small
noise, except on a planted half of the simulator's ground-truth manoeuvre events, where its
steering is off by 0.5 rad: the disagreement trigger must find exactly those.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from fleet_cli.main import cli
from fleetcore.loop import LoopError
from fleetcore.loop.disagreement import clips_for_windows, dataset_spec, disagreement_trigger, match_events, write_dataset_spec
from fleetcore.loop.embeddings import ImageModel, load_loop_config, telemetry_vector
from fleetcore.loop.index import build_index, index_info, like
from fleetcore.query.backtest import backtest
from fleetcore.store.catalog import Catalog
from fleetcore.triggers.library import load_trigger_file, load_triggers, parse_trigger
from fleetcore.triggers.model_signals import add_model_signals
from fleetcore.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PLANTABLE = ("hard_brake", "harsh_acceleration", "sharp_turn", "lane_change_left", "lane_change_right")
MODEL = "planner@1.2"


@pytest.fixture(scope="module")
def loop_store(tmp_path_factory):
    """(landing, store) of the loop fleet."""
    from fleetcore.clips import CurateConfig
    from fleetcore.simulate import simulate_fleet
    from fleetcore.stages.options import LabelsOptions
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    tmp = tmp_path_factory.mktemp("loop")
    landing, store = tmp / "landing", tmp / "store"
    simulate_fleet(landing, vehicles=10, drives_per_vehicle=3, cameras=2, width=96, height=64, fps=4.0, duration_s=40.0, seed=0, workers=2)
    cfg = CurateConfig(rate_hz=2.0, stages=("labels",), labels=LabelsOptions(builtins=("telemetry",)))
    run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return landing, store


def _ground_truth(landing: Path) -> pl.DataFrame:
    rows = []
    for p in sorted(landing.glob("*/*/ground_truth.json")):
        gt = json.loads(p.read_text())
        for e in gt["events"]:
            rows.append({"vehicle_id": gt["vehicle_id"], "drive_id": gt["drive_id"], "type": e["type"], "start_ns": e["start_ns"], "end_ns": e["end_ns"]})
    return pl.DataFrame(rows)


def _mine(store: Path, *args: str) -> list[dict]:
    res = CliRunner().invoke(cli, ["mine", *args, "--store", str(store), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


# --------------------------------------------------------------------------------------
# Similarity search
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def indexed(loop_store):
    _, store = loop_store
    res = build_index(store)
    assert res.rows["telemetry"] == Catalog(str(store)).read("clips").height
    return store


def test_like_braking_clip_returns_braking_clips_first(indexed):
    store = indexed
    clips = Catalog(str(store)).read("clips")
    braking = set(clips.filter(pl.col("triggers").list.contains("hard_brake"))["clip_id"])
    assert len(braking) >= 11
    queries = sorted(clips.filter(pl.col("triggers") == ["hard_brake"])["clip_id"])
    assert len(queries) >= 3
    precisions = []
    for q in queries:
        got = like(store, q, k=10)
        assert got.height == 10 and q not in got["clip_id"].to_list()
        assert got["distance"].is_sorted() and got["rank"].to_list() == list(range(1, 11))
        precisions.append(sum(c in braking for c in got["clip_id"]) / 10)
    assert np.mean(precisions) >= 0.8, precisions
    assert min(precisions) >= 0.7, precisions

    # the CLI: --like over every clip, then combined with a SQL filter over clips
    q = queries[0]
    top = _mine(store, "--like", q, "--k", "10")
    assert [r["clip_id"] for r in top] == like(store, q, k=10)["clip_id"].to_list()
    assert sum(r["clip_id"] in braking for r in top) >= 8
    night = set(clips.filter(pl.col("time_of_day") == "night")["clip_id"])
    assert night and night != set(clips["clip_id"])
    rows = _mine(store, "SELECT clip_id, time_of_day, primary_trigger FROM clips WHERE time_of_day = 'night'", "--like", q, "--k", "5")
    assert 0 < len(rows) <= 5 and all(r["time_of_day"] == "night" for r in rows)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    # the filtered search is the unfiltered order restricted to night clips
    everything = like(store, q, k=clips.height)["clip_id"].to_list()
    assert [r["clip_id"] for r in rows] == [c for c in everything if c in night][:5]
    # other tables filter too (a join: clips with predictions of a label, ...)
    rows = _mine(store, "SELECT c.clip_id FROM clips c JOIN telemetry_summary t ON c.clip_id = t.clip_id WHERE t.speed_max_kmh > 0",
                 "--like", q, "--k", "3")
    assert len(rows) == 3
    assert index_info(store)["rows"]["telemetry"] == clips.height


def test_like_errors(indexed, tmp_path):
    with pytest.raises(LoopError, match="not in the telemetry index"):
        like(indexed, "no-such-clip")
    with pytest.raises(LoopError, match="no image index"):
        like(indexed, "x", kind="image")
    res = CliRunner().invoke(cli, ["mine", "--store", str(indexed)])
    assert res.exit_code != 0 and "QUERY" in res.output
    res = CliRunner().invoke(cli, ["mine", "SELECT start_ns FROM clips", "--like", "x", "--store", str(indexed)])
    assert res.exit_code == 1 and "clip_id column" in res.output


def test_telemetry_vector_is_normalised_and_shift_tolerant():
    t = (np.arange(200) * 5e7).astype(np.int64)
    base = {"t_ns": t, "speed_mps": np.full(200, 15.0), "accel_lon": np.zeros(200), "accel_lat": np.zeros(200),
            "yaw_rate": np.zeros(200), "steering_angle_rad": np.zeros(200)}
    brake = dict(base, accel_lon=np.where((t > 4e9) & (t < 5e9), -6.0, 0.0))
    later = dict(base, accel_lon=np.where((t > 5e9) & (t < 6e9), -6.0, 0.0))
    turn = dict(base, yaw_rate=np.where((t > 4e9) & (t < 6e9), 0.4, 0.0))
    a, b, c = (telemetry_vector(pl.DataFrame(d), 0, int(t[-1])) for d in (brake, later, turn))
    assert abs(np.linalg.norm(a) - 1) < 1e-5
    assert float(a @ b) > float(a @ c) + 0.3


def _tiny_onnx(path: Path) -> Path:
    """An ONNX model (onnx helper API): 16x16 RGB -> 2x2 average-pooled colours (12 features)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 12])
    pool = helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8])
    flat = helper.make_node("Flatten", ["p"], ["y"], axis=1)
    model = helper.make_model(helper.make_graph([pool, flat], "colours", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_image_embeddings_span_cameras(indexed, tmp_path):
    store = indexed  # its telemetry index is built first: an image-only rebuild keeps it
    _tiny_onnx(tmp_path / "colours.onnx")
    cfg = tmp_path / "loop.yaml"
    cfg.write_text("image:\n  path: colours.onnx\n  input_size: [16, 16]\n  window_s: 4.0\n  frames_per_window: 2\n")
    model = load_loop_config(cfg)["image"]
    assert isinstance(model, ImageModel) and Path(model.path).is_file()
    res = CliRunner().invoke(cli, ["index", "build", "--store", str(store), "--config", str(cfg), "--kind", "image", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    clips = Catalog(str(store)).read("clips")
    assert info["dims"]["image"] == 12
    assert info["rows"]["image"] >= 2 * clips.height  # both cameras, one or more windows each
    q = clips.sort("clip_id")["clip_id"][0]
    got = like(store, q, k=20, kind="image")
    assert got.height == 20 and q not in got["clip_id"].to_list()
    # every vector of the query clip (each camera and window) against every camera of other clips:
    # a clip scores its best match (brute force over the LanceDB table agrees)
    import lancedb

    table = lancedb.connect(str(Path(store) / "vectors")).open_table("image").to_arrow()
    assert set(table.column("camera").to_pylist()) == {"front", "left"}
    vecs = np.asarray(table.column("vector").to_pylist(), np.float64)
    ids = np.asarray(table.column("clip_id").to_pylist())
    qv = vecs[ids == q]
    assert len({c for c, i in zip(table.column("camera").to_pylist(), ids) if i == q}) == 2
    dist = 1 - qv @ vecs.T / np.outer(np.linalg.norm(qv, axis=1), np.linalg.norm(vecs, axis=1))
    best: dict[str, float] = {}
    for j, cid in enumerate(ids):
        if cid != q:
            best[cid] = min(best.get(cid, 9.0), float(dist[:, j].min()))
    brute = sorted(best, key=lambda c: (best[c], c))[:20]
    assert got["clip_id"].to_list()[:10] == brute[:10]
    assert np.allclose(got["distance"].to_numpy()[:10], [best[c] for c in brute[:10]], atol=1e-4)
    front_only = like(store, q, k=5, kind="image", camera="front")
    assert front_only.height == 5
    rows = _mine(store, "SELECT clip_id, time_of_day FROM clips WHERE time_of_day = 'night'", "--like", q, "--k", "4", "--embedding", "image")
    assert len(rows) == 4 and {r["time_of_day"] for r in rows} == {"night"} and "camera" in rows[0]
    # the telemetry index of the earlier build is still there (one kind rebuilt)
    assert like(store, q, k=3).height == 3
    with pytest.raises(ConfigError, match="not found"):
        ImageModel(path=str(tmp_path / "absent.onnx"))


# --------------------------------------------------------------------------------------
# Predictions in, disagreements out
# --------------------------------------------------------------------------------------
def _planner_predictions(landing: Path, store: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-frame planner predictions keyed by vehicle + UTC timestamp, the planted events)."""
    cat = Catalog(str(store))
    clips = cat.read("clips")
    offsets = dict(cat.read("drives").select(pl.concat_str("vehicle_id", "drive_id"), "utc_offset_ns").iter_rows())
    gt = _ground_truth(landing).filter(pl.col("type").is_in(PLANTABLE))
    inside = gt.join(clips.select("vehicle_id", "drive_id", "start_ns", "end_ns"), on=["vehicle_id", "drive_id"], suffix="_clip").filter(
        (pl.col("start_ns") >= pl.col("start_ns_clip")) & (pl.col("end_ns") <= pl.col("end_ns_clip")))
    candidates = inside.select("vehicle_id", "drive_id", "type", "start_ns", "end_ns").unique().sort("vehicle_id", "drive_id", "start_ns")
    planted = candidates.gather_every(2)
    rng = np.random.default_rng(5)
    frames = []
    for (veh, drv), group in clips.group_by(["vehicle_id", "drive_id"]):
        tel = cat.read_drive_table("telemetry", veh, drv)
        tt = tel.column("t_ns").to_numpy()
        steer = tel.column("steering_angle_rad").to_numpy()
        speed = tel.column("speed_mps").to_numpy()
        mine = planted.filter((pl.col("vehicle_id") == veh) & (pl.col("drive_id") == drv))
        for s, e in group.select("start_ns", "end_ns").iter_rows():
            t = np.arange(s, e, 100_000_000, dtype=np.int64)
            ps = np.interp(t, tt, steer) + rng.normal(0, 0.02, len(t))
            pv = np.interp(t, tt, speed) + rng.normal(0, 0.2, len(t))
            for a, b in mine.select("start_ns", "end_ns").iter_rows():
                ps[(t >= a - 100_000_000) & (t <= b + 100_000_000)] += 0.5
            frames.append(pl.DataFrame({"vehicle_id": veh, "t_ns": t, "steering_angle_rad": ps, "speed_mps": pv,
                                        "confidence": np.full(len(t), 0.9)})
                          .with_columns(pl.from_epoch(pl.col("t_ns") + offsets[veh + drv], time_unit="ns").alias("timestamp")).drop("t_ns"))
    return pl.concat(frames), planted


@pytest.fixture(scope="module")
def planner(loop_store, tmp_path_factory):
    """(the planner's predictions Parquet, its rows, the planted events)."""
    landing, store = loop_store
    preds, planted = _planner_predictions(landing, store)
    assert planted.height >= 10
    path = tmp_path_factory.mktemp("planner") / "planner.parquet"
    preds.with_columns(pl.lit("x").alias("note")).write_parquet(path)
    return path, preds, planted


def test_predictions_disagreement_backtest_and_dataset(loop_store, planner, tmp_path):
    _, store = loop_store
    path, preds, planted = planner
    runner = CliRunner()
    res = runner.invoke(cli, ["predictions", "import", str(path), "--store", str(store), "--model", MODEL, "--json"])
    assert res.exit_code == 0, res.output
    imp = json.loads(res.output)
    assert imp["join"] == "vehicle_utc" and imp["rows"] == preds.height and imp["unmatched"] == 0 and imp["ignored_columns"] == ["note"]
    # a per-clip classifier, joined by clip_id: confident, except on two clips
    clips = Catalog(str(store)).read("clips")
    per_clip = clips.select("clip_id", pl.col("manoeuvre").fill_null("straight").alias("class"),
                            pl.when(pl.int_range(pl.len()) < 2).then(0.2).otherwise(0.95).alias("score"))
    per_clip.write_parquet(tmp_path / "cls.parquet")
    res = runner.invoke(cli, ["predictions", "import", str(tmp_path / "cls.parquet"), "--store", str(store), "--model", "manoeuvres@3"])
    assert res.exit_code == 0 and "joined by clip_id" in res.output, res.output
    # importing again replaces the model version's rows
    res = runner.invoke(cli, ["predictions", "import", str(tmp_path / "cls.parquet"), "--store", str(store), "--model", "manoeuvres@3"])
    assert res.exit_code == 0, res.output

    # the predictions table is queryable like labels, and listed in the store manifest
    counts = {r["model"] + "@" + r["model_version"]: r["n"] for r in _mine(
        store, "SELECT model, model_version, COUNT(*) AS n FROM predictions GROUP BY model, model_version")}
    assert counts == {MODEL: preds.height, "manoeuvres@3": clips.height}
    low = _mine(store, "SELECT p.clip_id FROM predictions p JOIN clips c ON p.clip_id = c.clip_id "
                       "WHERE p.model = 'manoeuvres' AND p.score < 0.5")
    assert len(low) == 2
    assert all(g.table("predictions") for g in Catalog(str(store)).generations())

    # a disagreement trigger, backtested on history
    trig = tmp_path / "trigger.yaml"
    res = runner.invoke(cli, ["triggers", "from-disagreement", "--model", MODEL, "--metric", "steering", "--threshold", "0.25", "--out", str(trig)])
    assert res.exit_code == 0, res.output
    spec = load_trigger_file(trig)[0]
    assert spec.model == MODEL and spec.where == "steer_error > 0.25"
    result = backtest(store, [spec])
    m = match_events(result.events, planted)
    assert m.precision >= 0.9 and m.recall >= 0.9, (f"planted {planted.height}, fired {m.fired}: precision {m.precision:.3f}, "
                                                    f"recall {m.recall:.3f}", m.missed, m.false_alarms)
    assert m.fired >= 0.9 * planted.height
    s = result.summary()
    assert s["clips"] >= 1 and s["estimated_bytes"] > 0 and s["clip_hours"] > 0
    res = runner.invoke(cli, ["triggers", "backtest", str(trig), "--store", str(store), "--json"])
    assert res.exit_code == 0, res.output
    cli_s = json.loads(res.output)
    assert cli_s["firings"] == s["firings"] and cli_s["estimated_bytes"] == s["estimated_bytes"]
    # a plain trigger next to it is unaffected; a model trigger with no predictions fires nothing
    other = tmp_path / "other.yaml"
    other.write_text(json.dumps(disagreement_trigger("nobody@1", "speed")))
    both = backtest(store, load_triggers([trig, other, REPO / "triggers" / "hard_brake.yaml"]))
    assert set(both.events["trigger"]) == {spec.name, "hard_brake"}

    # the clips the windows cover hold every planted event; a dataset built from them holds them
    found = clips_for_windows(store, result.windows)
    holding = planted.join(clips.select("clip_id", "vehicle_id", "drive_id", pl.col("start_ns").alias("c0"), pl.col("end_ns").alias("c1")),
                           on=["vehicle_id", "drive_id"]).filter((pl.col("start_ns") >= pl.col("c0")) & (pl.col("end_ns") <= pl.col("c1")))
    want = set(holding["clip_id"])
    assert want <= set(found["clip_id"])
    spec_path = write_dataset_spec(dataset_spec("disagreements", found["clip_id"].to_list(), store=str(store), cameras=("front",),
                                                frames_per_clip=2, frame_rate_hz=1.0, resolution=(64, 32), privacy_required=False),
                                   tmp_path / "specs" / "disagreements.yaml")
    from pipelines.build_dataset import run_build_dataset

    built = run_build_dataset(str(spec_path), store=str(store), datasets_root=tmp_path / "datasets", beam_args=["--runner=FnApiRunner"])
    manifest = json.loads(Path(built.manifest_path).read_text())
    assert want <= {smp["clip_id"] for smp in manifest["samples"]}

    # the campaign file a vehicle logger reads, with the backtest's cost
    camp = tmp_path / "campaign.json"
    res = runner.invoke(cli, ["triggers", "campaign", str(trig), "--name", "planner_steering", "--out", str(camp), "--store", str(store),
                              "--max-clips-per-day", "50"])
    assert res.exit_code == 0, res.output
    doc = json.loads(camp.read_text())
    import jsonschema

    jsonschema.validate(doc, json.loads((REPO / "docs" / "campaign.schema.json").read_text()))
    assert doc["models"] == [{"name": "planner", "version": "1.2"}]
    assert doc["triggers"][0]["signals"] == ["steer_error"] and doc["backtest"]["clips"] == s["clips"]
    assert "steer_error" in doc["signals"]


def test_label_and_confidence_metrics(loop_store, tmp_path):
    _, store = loop_store
    clips = Catalog(str(store)).read("clips").filter(pl.col("manoeuvre").is_not_null()).sort("clip_id")
    wrong = clips["clip_id"][:3].to_list()
    rows = clips.select("clip_id", pl.when(pl.col("clip_id").is_in(wrong)).then(pl.lit("reversing")).otherwise(pl.col("manoeuvre")).alias("class_label"),
                        pl.when(pl.col("clip_id").is_in(wrong)).then(0.3).otherwise(0.9).alias("score"))
    rows.write_parquet(tmp_path / "p.parquet")
    from fleetcore.loop.disagreement import write_trigger
    from fleetcore.loop.predictions import import_predictions

    import_predictions(store, tmp_path / "p.parquet", "cls@7")
    for metric in ("label", "low_confidence"):
        spec = write_trigger(disagreement_trigger("cls@7", metric, pre_roll_s=0, post_roll_s=0, cooldown_s=0), tmp_path / f"{metric}.yaml")
        res = backtest(store, [spec])
        hit = clips_for_windows(store, res.windows)
        # the windows are the wrong clips' spans (a neighbouring clip may touch one at its edge)
        assert set(wrong) <= set(hit["clip_id"]), metric
        assert res.events.height == len(wrong), metric


def test_model_signals_trajectory_and_validation():
    n = 100
    t = (np.arange(n) * 5e7).astype(np.int64)
    derived = pl.DataFrame({"t_ns": t, "speed_mps": np.full(n, 10.0), "yaw_rate": np.zeros(n), "steering_angle_rad": np.zeros(n),
                            "accel_lon": np.zeros(n)})
    base = {"model": "m", "model_version": "1", "clip_id": "c", "vehicle_id": "v", "drive_id": "d", "score": None, "class_label": None,
            "classes": None, "scores": None, "steering_angle_rad": 0.0, "speed_mps": 10.0, "accel_lon_mps2": None, "traj_dt_s": 0.5}
    preds = pl.DataFrame([
        base | {"t_ns": int(t[10]), "traj_x_m": [5.0, 10.0], "traj_y_m": [0.0, 0.0]},
        base | {"t_ns": int(t[50]), "traj_x_m": [5.0, 10.0], "traj_y_m": [2.0, 2.0]},
    ])
    out = add_model_signals(derived, preds, pl.DataFrame({"clip_id": ["c"], "start_ns": [0], "end_ns": [int(t[-1])]}))
    assert out["trajectory_error"][10] == pytest.approx(0.0, abs=1e-6)
    assert out["trajectory_error"][50] == pytest.approx(2.0, abs=1e-6)
    assert out["trajectory_error"][30] is None  # no prediction within the tolerance
    assert out["steer_error"][10] == pytest.approx(0.0)
    # a model signal needs a model; a bad model name is refused
    with pytest.raises(ConfigError, match="model signals"):
        parse_trigger({"name": "x", "version": 1, "where": "steer_error > 0.1"}, path="t.yaml")
    with pytest.raises(ConfigError, match="NAME@VERSION"):
        parse_trigger({"name": "x", "version": 1, "where": "steer_error > 0.1", "model": "planner"}, path="t.yaml")
    spec = parse_trigger({"name": "x", "version": 1, "where": "steer_error > 0.1 AND speed_kmh > 20", "model": "p@1"}, path="t.yaml")
    assert spec.model == "p@1"
    plain = parse_trigger({"name": "x", "version": 1, "where": "speed_kmh > 20"}, path="t.yaml")
    assert "model" not in plain.normalized()  # existing triggers keep their config hashes
    with pytest.raises(LoopError, match="unknown metric"):
        disagreement_trigger("p@1", "vibes")


def test_dagster_loop_round(loop_store, planner, tmp_path):
    import dagster as dg

    from dagster_project import loop as L
    from dagster_project.resources import BeamRunner, FleetPaths
    from fleetcore.datasets.manifest import read_manifest
    from pipelines.build_dataset import run_build_dataset

    _, store = loop_store
    path, _, planted = planner
    datasets = tmp_path / "datasets"
    base_spec = write_dataset_spec(dataset_spec("turns", Catalog(str(store)).read("clips").filter(pl.col("primary_trigger") == "sharp_turn")["clip_id"],
                                                cameras=("front",), frames_per_clip=2, frame_rate_hz=1.0, resolution=(64, 32),
                                                privacy_required=False), tmp_path / "turns.yaml")
    base = run_build_dataset(str(base_spec), store=str(store), datasets_root=datasets, beam_args=["--runner=FnApiRunner"])
    paths = FleetPaths(store_root=str(store), datasets_root=str(datasets), reports_root=str(tmp_path / "reports"))
    loop = L.LoopSettings(base_dataset=f"turns@{base.version}", predictions_path=str(path), model="planner@2", metric="steering",
                          threshold=0.25, work_dir=str(tmp_path / "work"))
    from dagster_project.beam_pipes import BeamPipesClient

    res = dg.materialize(L.LOOP_ASSETS, resources={"paths": paths, "beam": BeamRunner(), "loop": loop, "pipes": BeamPipesClient()})
    assert res.success
    nxt = res.output_for_node("loop__next_dataset")
    diff = nxt["diff"]
    new = set(res.output_for_node("loop__new_clips"))
    old = {s["clip_id"] for s in read_manifest(base.path)["samples"]}
    assert diff["n_removed"] == 0 and set(diff["added"]) == new - old and diff["n_added"] > 0
    assert nxt["name"] == "turns" and nxt["version"] != base.version
    assert {s["clip_id"] for s in read_manifest(nxt["path"])["samples"]} == old | new
    trig = res.output_for_node("loop__disagreement_trigger")
    assert Path(trig["campaign"]).is_file() and trig["summary"]["clips"] > 0
    from dagster_project.definitions import defs

    assert {L.INDEX_JOB, L.LOOP_JOB} <= {j.name for j in defs.resolve_all_job_defs()}
    mats = {e.asset_key.to_user_string(): e for e in res.get_asset_materialization_events()}
    assert {"loop/clip_vectors", "loop/base_dataset", "loop/model_predictions", "loop/disagreement_trigger", "loop/new_clips",
            "loop/next_dataset"} <= set(mats)


def test_predictions_join_by_drive_time_and_errors(loop_store):
    from fleetcore.loop.predictions import join_to_clips

    _, store = loop_store
    clips = Catalog(str(store)).read("clips").sort("clip_id")
    c = clips.row(0, named=True)
    rows = pl.DataFrame({"vehicle_id": [c["vehicle_id"]] * 3, "drive_id": [c["drive_id"]] * 3,
                         "t_ns": [c["start_ns"] + 1, c["end_ns"], c["end_ns"] + 10**12], "class": ["a", "b", "c"]})
    got, how, dropped = join_to_clips(rows, clips)
    assert how == "vehicle_drive_time" and dropped == 1
    assert got["clip_id"].to_list() == [c["clip_id"]] * 2 and got["class_label"].to_list() == ["a", "b"]
    with pytest.raises(LoopError, match="cannot join"):
        join_to_clips(pl.DataFrame({"score": [0.5]}), clips)
    with pytest.raises(LoopError, match="cannot be read"):
        join_to_clips(pl.DataFrame({"clip_id": [c["clip_id"]], "score": ["high"]}), clips)


def test_erase_drops_the_vector_index(loop_store, tmp_path):
    import shutil

    from fleetcore.store.layout import StoreLayout
    from fleetcore.store.retention import erase

    _, store = loop_store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    build_index(copy, kinds=["telemetry"])
    vehicle = Catalog(str(copy)).read("clips")["vehicle_id"][0]
    res = erase(StoreLayout(str(copy)), vehicle_id=vehicle)
    assert json.loads(Path(res.audit_record).read_text())["vector_index_removed"] is True
    assert not any(p.is_file() for p in (copy / "vectors").rglob("*"))
    with pytest.raises(LoopError, match="no telemetry index"):
        like(copy, "x")
    build_index(copy)
    assert vehicle not in set(lancedb_ids(copy))


def lancedb_ids(store: Path) -> list[str]:
    import lancedb

    return lancedb.connect(str(store / "vectors")).open_table("telemetry").to_arrow().column("vehicle_id").to_pylist()
