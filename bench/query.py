"""Benchmark `fleet mine` queries (fleetcore.query.mining) against DuckDB on the same Parquet files.

Builds a synthetic catalog (default 1,000,000 clips over 60 hive ``date=`` partitions, CLIPS
columns + a long LABELS table + the wide ``clip_labels`` table the curate job writes beside it) in a
temp dir, then times typical queries with our command path
(a fresh ``MiningSession`` + query + collect, as ``fleet mine`` runs them) and with DuckDB (bench-only
dependency, imported only here). Prints a table and a JSON document.

    .venv/bin/python -m bench.query [--clips 1000000] [--days 60] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fleetcore.clips import clip_labels_table
from fleetcore.query.mining import Filters, MiningSession

log = logging.getLogger("bench.query")

TRIGGERS = ["hard_brake", "harsh_acceleration", "sharp_turn", "lane_change_left", "lane_change_right", "stop_and_go",
            "high_speed", "disengagement", "shadow_disagreement", "gps_glitch", "random_sample"]
TOD = ["day", "dusk_dawn", "night"]
END_DATE = dt.date(2026, 11, 28)


def build_catalog(root: Path, n: int, days: int, seed: int = 0) -> None:
    """One catalog file per date and table, committed to the store manifest as one generation per
    date (the readers read what the manifest lists)."""
    from fleetcore.store.layout import StoreLayout
    from fleetcore.store.manifest import Generation, commit

    gens = []
    rng = np.random.default_rng(seed)
    day = rng.integers(0, days, n)
    order = np.argsort(day, kind="stable")
    day = day[order]
    dates = [(END_DATE - dt.timedelta(days=days - 1 - int(d))).isoformat() for d in range(days)]
    prim = rng.integers(0, len(TRIGGERS), n)
    extra = rng.integers(0, len(TRIGGERS), n)
    has_extra = rng.random(n) < 0.3
    speed = rng.gamma(3.0, 5.0, n)
    lat0 = rng.choice([37.77, 48.86, 35.68, -33.86], n) + rng.normal(0, 0.05, n)
    lon0 = np.select([lat0 > 45, lat0 > 36.5, lat0 > 0], [2.35, -122.42, 139.69], 151.2) + rng.normal(0, 0.05, n)
    tod = rng.integers(0, 3, n)
    peds = rng.random(n) < 0.25
    t_start = np.array([int(dt.datetime.fromisoformat(d + "T00:00:00+00:00").timestamp()) for d in dates], np.int64)[day] * 10**9
    t_start = t_start + rng.integers(0, 86_400 * 10**9, n)
    ids = np.array([f"veh-{v:04d}-clip-{i:08d}" for i, v in enumerate(rng.integers(0, 2000, n))])
    for k, date in enumerate(dates):
        idx = np.flatnonzero(day == k)
        if not len(idx):
            continue
        trig = [[TRIGGERS[prim[i]]] + ([TRIGGERS[extra[i]]] if has_extra[i] and extra[i] != prim[i] else []) for i in idx]
        m = len(idx)
        t = pa.table({
            "clip_id": pa.array(ids[idx]),
            "vehicle_id": pa.array([c[:8] for c in ids[idx]]),
            "drive_id": pa.array([c[:8] + "-" + date for c in ids[idx]]),
            "date": pa.array([date] * m),
            "start_ns": pa.array(t_start[idx]), "end_ns": pa.array(t_start[idx] + 20 * 10**9),
            "start_utc": pa.array(t_start[idx], pa.timestamp("ns", tz="UTC")),
            "duration_s": pa.array(np.full(m, 20.0)),
            "triggers": pa.array(trig, pa.list_(pa.string())),
            "primary_trigger": pa.array([TRIGGERS[prim[i]] for i in idx]),
            "priority": pa.array(prim[idx].astype(np.int32)),
            "cameras": pa.array([["front", "left", "right", "rear"]] * m, pa.list_(pa.string())),
            "n_samples": pa.array(np.full(m, 200, np.int32)), "sample_rate_hz": pa.array(np.full(m, 10.0)),
            "missing_frames": pa.array(np.zeros(m, np.int32)),
            "speed_min_mps": pa.array(speed[idx] * 0.5), "speed_mean_mps": pa.array(speed[idx]), "speed_max_mps": pa.array(speed[idx] * 1.4),
            "peak_decel_mps2": pa.array(rng.gamma(2.0, 1.2, m)), "peak_lat_accel_mps2": pa.array(rng.gamma(2.0, 0.8, m)),
            "lat_min": pa.array(lat0[idx] - 0.002), "lat_max": pa.array(lat0[idx] + 0.002),
            "lon_min": pa.array(lon0[idx] - 0.002), "lon_max": pa.array(lon0[idx] + 0.002),
            "shard": pa.array([f"date={date}/clips-{date}-{i // 500:06d}.tar" for i in range(m)]),
            "member_key": pa.array(ids[idx]), "config_version": pa.array(["cfg-bench"] * m),
            "time_of_day": pa.array([TOD[j] for j in tod[idx]]), "pedestrians": pa.array(peds[idx]),
        })
        p = root / "catalog" / "clips" / f"date={date}"
        p.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, p / "part-0.parquet", compression="zstd")
        lab = pa.table({
            "clip_id": pa.array(np.repeat(ids[idx], 3)),
            "labeller": pa.array(["bench"] * 3 * m), "labeller_version": pa.array(["1"] * 3 * m),
            "label": pa.array(["time_of_day", "pedestrians", "sharpness"] * m),
            "value": pa.array([v for i in idx for v in (TOD[tod[i]], "true" if peds[i] else "false", None)], pa.string()),
            "score": pa.array([v for i in idx for v in (None, 1.0 if peds[i] else 0.0, float(speed[i]))], pa.float64()),
        })
        p = root / "catalog" / "labels" / f"date={date}"
        p.mkdir(parents=True, exist_ok=True)
        pq.write_table(lab, p / "part-0.parquet", compression="zstd")
        # the curate job writes the labels pivoted per clip beside them (fleetcore.clips.clip_labels_table)
        p = root / "catalog" / "clip_labels" / f"date={date}"
        p.mkdir(parents=True, exist_ok=True)
        pq.write_table(clip_labels_table(lab), p / "part-0.parquet", compression="zstd")
        gens.append(Generation(vehicle_id="bench", drive_id=date, date=date, config_version="cfg-bench", clips=m,
                               tables=tuple((t, f"catalog/{t}/date={date}/part-0.parquet") for t in ("clip_labels", "clips", "labels"))))
    commit(StoreLayout(str(root)), add=gens)


def queries(now: dt.datetime) -> list[dict[str, Any]]:
    cutoff = (now - dt.timedelta(days=30)).date().isoformat()
    bbox = (-122.45, 37.75, -122.40, 37.80)
    return [
        {"name": "night_ped_hardbrake_slow_30d",
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
        {"name": "labels_pivot_night_ped_7d",
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
            ours, n_ours = _time(lambda: MiningSession.open(root, filt).query(sql).height, args.repeat)
            duck, n_duck = _time(lambda: len(con.sql(q["duck"]).to_arrow_table()), args.repeat)
            results.append({"query": q["name"], "ours_s": round(ours, 4), "duckdb_s": round(duck, 4), "ratio": round(ours / duck, 2),
                            "rows": n_ours, "rows_duckdb": n_duck, "goal_met": ours < 0.5 and ours <= 1.5 * duck})
    w = max(len(r["query"]) for r in results)
    print(f"{'query':<{w}}  {'ours s':>8}  {'duckdb s':>8}  {'ratio':>6}  {'rows':>8}  goal")
    for r in results:
        print(f"{r['query']:<{w}}  {r['ours_s']:>8.3f}  {r['duckdb_s']:>8.3f}  {r['ratio']:>6.2f}  {r['rows']:>8}  {'yes' if r['goal_met'] else 'NO'}")
    doc = json.dumps({"clips": args.clips, "days": args.days, "repeat": args.repeat, "results": results}, indent=1)
    print(doc)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(doc + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
