"""Benchmark `fleet mine` queries (fleetcore.query.mining) against DuckDB on the same Parquet files.

Builds a synthetic catalog (default 1,000,000 clips over 60 hive ``date=`` partitions, CLIPS
columns + a long LABELS table + the wide ``clip_labels`` table the curate job writes beside it) in a
temp dir, then times typical queries with our command path
(a fresh ``MiningSession`` + query + collect, as ``fleet mine`` runs them) and with DuckDB (bench-only
dependency, imported only here). Prints a table and a JSON document.

    .venv/bin/python -m bench.query [--clips 1000000] [--days 60] [--repeat 3] [--root DIR]

At fleet scale (``--clips 100000000 --days 365 --root /big/disk``, about 13 GB) the catalog is written
per date in parts of at most 2,000,000 rows, so building it needs bounded memory. Goals: every query
within 1.5x of DuckDB; a query whose time filter prunes date partitions under 1 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from fleetcore.clips import clip_labels_table
from fleetcore.query.mining import Filters, MiningSession
from fleetcore.queryguard import QueryLimits

log = logging.getLogger("bench.query")

TRIGGERS = ["hard_brake", "harsh_acceleration", "sharp_turn", "lane_change_left", "lane_change_right", "stop_and_go",
            "high_speed", "disengagement", "shadow_disagreement", "gps_glitch", "random_sample"]
TOD = ["day", "dusk_dawn", "night"]
END_DATE = dt.date(2026, 11, 28)


#: Rows per catalog file: one generation (a "drive" of the bench) per part, so memory stays bounded
#: whatever ``--clips`` is.
PART_ROWS = 2_000_000


def _part(date: str, m: int, offset: int, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``m`` synthetic clips of one date (CLIPS columns) and their LABELS rows, built column-wise."""
    day0 = int(dt.datetime.fromisoformat(date + "T00:00:00+00:00").timestamp()) * 10**9
    prim = rng.integers(0, len(TRIGGERS), m)
    extra = rng.integers(0, len(TRIGGERS), m)
    has_extra = (rng.random(m) < 0.3) & (extra != prim)
    speed = rng.gamma(3.0, 5.0, m)
    lat0 = rng.choice([37.77, 48.86, 35.68, -33.86], m) + rng.normal(0, 0.05, m)
    lon0 = np.select([lat0 > 45, lat0 > 36.5, lat0 > 0], [2.35, -122.42, 139.69], 151.2) + rng.normal(0, 0.05, m)
    t_start = day0 + rng.integers(0, 86_400 * 10**9, m)
    trig = pl.Series("t", TRIGGERS)
    tod_names = pl.Series("tod", TOD)
    base = pl.DataFrame({
        "veh": rng.integers(0, 2000, m), "i": np.arange(offset, offset + m), "prim": prim, "extra": extra, "has_extra": has_extra,
        "speed": speed, "lat0": lat0, "lon0": lon0, "t_start": t_start, "tod": rng.integers(0, 3, m), "peds": rng.random(m) < 0.25,
        "decel": rng.gamma(2.0, 1.2, m), "lat_acc": rng.gamma(2.0, 0.8, m),
    })
    vehicle = pl.format("veh-{}", pl.col("veh").cast(pl.String).str.zfill(4))
    clip_id = pl.format("{}-clip-{}", vehicle, pl.col("i").cast(pl.String).str.zfill(9))
    prim_s = trig.gather(prim)
    clips = base.select(
        clip_id.alias("clip_id"), vehicle.alias("vehicle_id"), pl.format("{}-{}", vehicle, pl.lit(date)).alias("drive_id"),
        pl.lit(date).alias("date"), pl.col("t_start").alias("start_ns"), (pl.col("t_start") + 20 * 10**9).alias("end_ns"),
        pl.col("t_start").cast(pl.Datetime("ns", "UTC")).alias("start_utc"), pl.lit(20.0).alias("duration_s"),
        pl.when(pl.col("has_extra")).then(pl.concat_list(pl.lit(prim_s), pl.lit(trig.gather(extra))))
          .otherwise(pl.concat_list(pl.lit(prim_s))).alias("triggers"),
        pl.lit(prim_s).alias("primary_trigger"), pl.col("prim").cast(pl.Int32).alias("priority"),
        pl.lit(["front", "left", "right", "rear"]).alias("cameras"), pl.lit(200, pl.Int32).alias("n_samples"),
        pl.lit(10.0).alias("sample_rate_hz"), pl.lit(0, pl.Int32).alias("missing_frames"),
        (pl.col("speed") * 0.5).alias("speed_min_mps"), pl.col("speed").alias("speed_mean_mps"), (pl.col("speed") * 1.4).alias("speed_max_mps"),
        pl.col("decel").alias("peak_decel_mps2"), pl.col("lat_acc").alias("peak_lat_accel_mps2"),
        (pl.col("lat0") - 0.002).alias("lat_min"), (pl.col("lat0") + 0.002).alias("lat_max"),
        (pl.col("lon0") - 0.002).alias("lon_min"), (pl.col("lon0") + 0.002).alias("lon_max"),
        pl.format("date={}/clips-{}-{}.tar", pl.lit(date), pl.lit(date), (pl.col("i") // 500).cast(pl.String).str.zfill(6)).alias("shard"),
        clip_id.alias("member_key"), pl.lit("cfg-bench").alias("config_version"),
        pl.lit(tod_names.gather(base["tod"])).alias("time_of_day"), pl.col("peds").alias("pedestrians"),
    )
    one = base.select(clip_id.alias("clip_id"), pl.lit(tod_names.gather(base["tod"])).alias("tod"), "peds", "speed")
    labels = pl.concat([
        one.select("clip_id", pl.lit(0).alias("k"), pl.lit("time_of_day").alias("label"), pl.col("tod").alias("value"), pl.lit(None, pl.Float64).alias("score")),
        one.select("clip_id", pl.lit(1).alias("k"), pl.lit("pedestrians").alias("label"),
                   pl.when(pl.col("peds")).then(pl.lit("true")).otherwise(pl.lit("false")).alias("value"), pl.col("peds").cast(pl.Float64).alias("score")),
        one.select("clip_id", pl.lit(2).alias("k"), pl.lit("sharpness").alias("label"), pl.lit(None, pl.String).alias("value"), pl.col("speed").alias("score")),
    ]).sort("clip_id", "k", maintain_order=True).select(
        "clip_id", pl.lit("bench").alias("labeller"), pl.lit("1").alias("labeller_version"), "label", "value", "score")
    return clips, labels


def build_catalog(root: Path, n: int, days: int, seed: int = 0) -> None:
    """``n`` clips spread evenly over ``days`` dates, written per date in parts of at most
    :data:`PART_ROWS` rows (each part one generation of the store manifest: the readers read what the
    manifest lists). Memory stays bounded by the part size."""
    from fleetcore.store.layout import StoreLayout
    from fleetcore.store.manifest import Generation, commit

    gens = []
    dates = [(END_DATE - dt.timedelta(days=days - 1 - d)).isoformat() for d in range(days)]
    offset = 0
    for k, date in enumerate(dates):
        per_day = n // days + (1 if k < n % days else 0)
        for part in range(-(-per_day // PART_ROWS)):
            m = min(PART_ROWS, per_day - part * PART_ROWS)
            clips, labels = _part(date, m, offset, np.random.default_rng([seed, k, part]))
            offset += m
            rel = {}
            for table, frame in (("clips", clips), ("labels", labels), ("clip_labels", pl.from_arrow(clip_labels_table(labels.to_arrow())))):
                rel[table] = f"catalog/{table}/date={date}/part-{part}.parquet"
                (root / rel[table]).parent.mkdir(parents=True, exist_ok=True)
                frame.write_parquet(root / rel[table], compression="zstd")
            gens.append(Generation(vehicle_id="bench", drive_id=f"{date}-{part}", date=date, config_version="cfg-bench", clips=m,
                                   tables=tuple((t, rel[t]) for t in ("clip_labels", "clips", "labels"))))
        log.info("built %s (%d clips)", date, per_day)
    commit(StoreLayout(str(root)), add=gens)


def queries(now: dt.datetime) -> list[dict[str, Any]]:
    cutoff = (now - dt.timedelta(days=30)).date().isoformat()
    bbox = (-122.45, 37.75, -122.40, 37.80)
    return [
        {"name": "night_ped_hardbrake_slow_30d", "pruned": True,
         "ours": ("SELECT clip_id, speed_mean_mps FROM clips WHERE time_of_day = 'night' AND pedestrians "
                  "AND array_contains(triggers, 'hard_brake') AND speed_mean_mps < 30 / 3.6", Filters(since="30d", now=now)),
         "duck": (f"SELECT clip_id, speed_mean_mps FROM clips WHERE date >= '{cutoff}' AND start_utc >= TIMESTAMPTZ '{(now - dt.timedelta(days=30)).isoformat()}' "
                  "AND time_of_day = 'night' AND pedestrians AND list_contains(triggers, 'hard_brake') AND speed_mean_mps < 30 / 3.6")},
        {"name": "count_by_trigger",
         "ours": ("SELECT t AS trigger, count(*) AS n FROM (SELECT unnest(triggers) AS t FROM clips) GROUP BY t ORDER BY n DESC", None),
         "duck": "SELECT t AS trigger, count(*) AS n FROM (SELECT unnest(triggers) AS t FROM clips) GROUP BY t ORDER BY n DESC"},
        {"name": "geo_bbox",
         "ours": ("SELECT clip_id, lat_min, lon_min FROM clips", Filters(bbox=bbox)),
         "duck": (f"SELECT clip_id, lat_min, lon_min FROM clips WHERE lon_max >= {bbox[0]} AND lon_min <= {bbox[2]} "
                  f"AND lat_max >= {bbox[1]} AND lat_min <= {bbox[3]}")},
        {"name": "topk_peak_decel",
         "ours": ("SELECT clip_id, peak_decel_mps2 FROM clips ORDER BY peak_decel_mps2 DESC LIMIT 100", None),
         "duck": "SELECT clip_id, peak_decel_mps2 FROM clips ORDER BY peak_decel_mps2 DESC LIMIT 100"},
        {"name": "labels_pivot_night_ped_7d", "pruned": True,
         "ours": ("SELECT c.clip_id FROM clips c JOIN clip_labels l ON c.clip_id = l.clip_id "
                  "WHERE l.time_of_day = 'night' AND l.pedestrians = 'true'", Filters(since="7d", now=now)),
         "duck": (f"SELECT c.clip_id FROM clips c JOIN clip_labels cl ON c.clip_id = cl.clip_id "
                  f"WHERE c.date >= '{(now - dt.timedelta(days=7)).date().isoformat()}' AND cl.date >= '{(now - dt.timedelta(days=7)).date().isoformat()}' "
                  f"AND c.start_utc >= TIMESTAMPTZ '{(now - dt.timedelta(days=7)).isoformat()}' AND cl.time_of_day = 'night' AND cl.pedestrians = 'true'")},
    ]


def _time(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--root", default=None, help="reuse/keep the synthetic store here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import duckdb  # bench-only dependency

    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        root = Path(args.root or tmp)
        if not (root / "catalog" / "clips").is_dir():
            t0 = time.perf_counter()
            build_catalog(root, args.clips, args.days)
            log.info("built %d clips over %d days in %.1f s at %s", args.clips, args.days, time.perf_counter() - t0, root)
        now = dt.datetime.combine(END_DATE, dt.time(23, 59, 59), tzinfo=dt.timezone.utc)
        con = duckdb.connect()
        con.execute(f"CREATE VIEW clips AS SELECT * FROM read_parquet('{root}/catalog/clips/*/*.parquet', hive_partitioning = true)")
        con.execute(f"CREATE VIEW labels AS SELECT * FROM read_parquet('{root}/catalog/labels/*/*.parquet', hive_partitioning = true)")
        con.execute(f"CREATE VIEW clip_labels AS SELECT * FROM read_parquet('{root}/catalog/clip_labels/*/*.parquet', hive_partitioning = true, union_by_name = true)")
        results = []
        for q in queries(now):
            sql, filt = q["ours"]
            # no row cap or time limit (`fleet mine` has them; raise --max-rows for big results): the engine is measured
            unbounded = QueryLimits(max_rows=None, time_limit_s=None)
            ours, n_ours = _time(lambda: MiningSession.open(root, filt, unbounded).query(sql).height, args.repeat)
            duck, n_duck = _time(lambda: len(con.sql(q["duck"]).to_arrow_table()), args.repeat)
            # goals: within 1.5x of DuckDB on the same files; a query that prunes partitions by date also under 1 s
            pruned = bool(q.get("pruned"))
            results.append({"query": q["name"], "ours_s": round(ours, 4), "duckdb_s": round(duck, 4), "ratio": round(ours / duck, 2),
                            "rows": n_ours, "rows_duckdb": n_duck, "date_pruned": pruned,
                            "goal_met": ours <= 1.5 * duck and (ours < 1.0 or not pruned)})
    w = max(len(r["query"]) for r in results)
    print(f"{'query':<{w}}  {'ours s':>8}  {'duckdb s':>8}  {'ratio':>6}  {'rows':>8}  goal")
    for r in results:
        print(f"{r['query']:<{w}}  {r['ours_s']:>8.3f}  {r['duckdb_s']:>8.3f}  {r['ratio']:>6.2f}  {r['rows']:>8}  {'yes' if r['goal_met'] else 'NO'}")
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # both engines in this process: an upper bound
    print(f"peak resident memory of the process: {peak_rss_mib:.0f} MiB")
    goals = [{"figure": f"{r['query']} s (DuckDB {r['duckdb_s']:.3f} s)", "value": r["ours_s"],
              "goal": "<= 1.5x DuckDB" + (", < 1 s" if r["date_pruned"] else ""), "met": r["goal_met"]} for r in results]
    doc = json.dumps({"clips": args.clips, "days": args.days, "repeat": args.repeat, "peak_rss_mib": round(peak_rss_mib),
                      "results": results, "goals": goals}, indent=1)
    print(doc)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(doc + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
