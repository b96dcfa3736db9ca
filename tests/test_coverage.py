"""fleet coverage: clip counts over label / trigger dimensions on a real store, and the heatmap PNG."""

from __future__ import annotations

import json

import cv2
import polars as pl
import pytest
from click.testing import CliRunner

from fleetcore.store.catalog import Catalog
from fleetcore.query.coverage import CoverageError, coverage_report, render_heatmap

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(plain_store):
    return plain_store[1]


def test_counts_trigger_by_vehicle(store):
    rep = coverage_report(store, ["trigger", "vehicle_id"], min_count=2)
    clips = Catalog(str(store)).read("clips")
    exploded = clips.select("vehicle_id", pl.col("triggers").alias("trigger")).explode("trigger")
    want = exploded.group_by("trigger", "vehicle_id").len()
    n_trig, n_veh = exploded["trigger"].n_unique(), exploded["vehicle_id"].n_unique()
    assert rep.table.height == n_trig * n_veh
    for t, v, n in want.iter_rows():
        assert rep.table.filter((pl.col("trigger") == t) & (pl.col("vehicle_id") == v))["count"].item() == n
    assert rep.empty_cells.height == n_trig * n_veh - want.height
    assert rep.thin_cells.height == want.filter(pl.col("len") < 2).height
    assert set(rep.table["status"]) <= {"empty", "thin", "ok"}
    assert rep.total_clips == clips.height


def test_speed_band_and_label_dims(store):
    rep = coverage_report(store, ["speed_band", "primary_trigger", "date"], min_count=1)
    assert set(rep.table["speed_band"]) <= {"stopped", "urban", "suburban", "highway", "(none)"}
    assert rep.table["count"].sum() == Catalog(str(store)).read("clips").height
    with pytest.raises(CoverageError, match="unknown dimension"):
        coverage_report(store, ["no_such_dim"])
    with pytest.raises(CoverageError, match="float"):
        coverage_report(store, ["speed_max_mps"])


def test_heatmap_png(store, tmp_path):
    rep = coverage_report(store, ["trigger", "vehicle_id"], min_count=2)
    out = render_heatmap(rep, tmp_path / "cov.png")
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 40 * rep.table["trigger"].n_unique()
    # non-blank cells: the grid area has colour (not just the white background)
    sat = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[:, :, 1]
    assert (sat > 60).mean() > 0.05
    rep3 = coverage_report(store, ["trigger", "vehicle_id", "date"], min_count=2)
    img3 = cv2.imread(str(render_heatmap(rep3, tmp_path / "cov3.png")))
    assert img3.shape[0] > img.shape[0]  # one panel per date


def test_cli_coverage(store, tmp_path):
    from fleet_cli.mine import coverage_cmd

    png = tmp_path / "c.png"
    res = CliRunner().invoke(coverage_cmd, ["--store", str(store), "--dims", "trigger,vehicle_id", "--min-count", "2", "--png", str(png), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{"):])
    assert doc["dims"] == ["trigger", "vehicle_id"] and doc["empty"] >= 1 and cv2.imread(str(png)) is not None
    res = CliRunner().invoke(coverage_cmd, ["--store", str(store), "--dims", "bogus"])
    assert res.exit_code != 0 and "available dimensions" in res.output


@pytest.mark.parametrize("rows", [
    [("day", "straight", 1)],  # one clip: one value in each dimension
    [("day", "straight", 3), ("day", "left_turn", 0)],  # one row value
    [],  # no clips at all
])
def test_heatmap_png_of_a_small_store(tmp_path, rows):
    """The README's `--dims time_of_day,manoeuvre --png` on a store with one clip or one value in a
    dimension: the picture is at least as tall as its colour bar (was a numpy broadcast error)."""
    from fleetcore.query.coverage import CoverageReport

    t = pl.DataFrame(rows, schema={"time_of_day": pl.String, "manoeuvre": pl.String, "count": pl.Int64}, orient="row")
    t = t.with_columns(pl.when(pl.col("count") == 0).then(pl.lit("empty")).otherwise(pl.lit("thin")).alias("status"))
    rep = CoverageReport(["time_of_day", "manoeuvre"], 5, t, t.filter(pl.col("status") == "empty"), t.filter(pl.col("status") == "thin"),
                         int(t["count"].sum()))
    img = cv2.imread(str(render_heatmap(rep, tmp_path / "small.png")))
    assert img is not None and img.shape[0] >= 200
