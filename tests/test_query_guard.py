"""The one read-only, bounded query guard (fleetcore.queryguard) in front of `fleet mine` and dataset specs.

Fast: an empty clip store (its tables scan empty with their contract schemas) or frames given
to the session, and dataset selection over a small in-memory clips table.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from fleetcore.datasets import DatasetSpec, load_spec, parse_spec
from fleetcore.datasets.selection import _apply_query
from fleetcore.errors import ConfigError, FleetError
from fleetcore.query.mining import MiningError, MiningSession, check_query
from fleetcore.queryguard import QueryLimits, QueryRefused, check_sql, collect_bounded

BASE_SPEC = {"name": "unit", "cameras": ["front"], "frames_per_clip": 4, "frame_rate_hz": 2.0, "resolution": [96, 64]}
SECRET = "s3cr3t-line-that-must-not-leak"

OR_5500 = "SELECT clip_id FROM clips WHERE " + " OR ".join(f"clip_id = 'c{i}'" for i in range(5500))
OR_2000 = "SELECT clip_id FROM clips WHERE " + " OR ".join(f"a={i % 10}" for i in range(2000))  # 14,000 chars
PARENS_3000 = "SELECT clip_id FROM clips WHERE " + "(" * 3000 + "duration_s > 1" + ")" * 3000
CROSS_5 = "SELECT count(*) FROM clips a, clips b, clips c, clips d, clips e"


@pytest.fixture()
def outside(tmp_path) -> tuple[Path, Path]:
    """A Parquet and a CSV file outside any store, both holding a clip_id and a secret."""
    pq_file, csv_file = tmp_path / "outside.parquet", tmp_path / "outside.csv"
    pl.DataFrame({"clip_id": ["x1"], "secret": [SECRET]}).write_parquet(pq_file)
    csv_file.write_text(f"root:x:0:0:{SECRET}:/root:/bin/bash\nclip_id,{SECRET},a,b\n")
    return pq_file, csv_file


@pytest.fixture()
def session(tmp_path) -> MiningSession:
    (tmp_path / "store").mkdir()
    return MiningSession.open(tmp_path / "store")


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------------------
# b) bounded queries: refused before the SQL parser, fast, one line
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sql", "limit", "words"),
    [
        (OR_5500, "max_chars", "max_chars = 20,000"),
        (OR_2000, "max_terms", "max_terms = 500"),
        (PARENS_3000, "max_nesting", "max_nesting = 32"),
        ("SELECT " + "NOT " * 40 + "true AS t FROM clips", "max_nesting", "max_nesting"),
        ("SELECT " + "CASE WHEN true THEN " * 40 + "1" + " END" * 40 + " AS t FROM clips", "max_nesting", "max_nesting"),
    ],
)
def test_oversized_queries_are_refused_fast_in_one_line(session, sql, limit, words):
    t0 = time.perf_counter()
    with pytest.raises(MiningError) as ei:
        session.query(sql)
    assert time.perf_counter() - t0 < 2.0
    assert ei.value.limit == limit and words in one_line(ei.value)
    with pytest.raises(QueryRefused) as ei2:
        check_sql(sql, tables=["clips"])
    assert ei2.value.limit == limit


def test_cli_refuses_the_segfaulting_or_chain_and_deep_parens(tmp_path):
    from fleet_cli.mine import mine

    (tmp_path / "store").mkdir()
    for sql in (OR_5500, PARENS_3000):
        res = CliRunner().invoke(mine, [sql, "--store", str(tmp_path / "store")])
        assert res.exit_code == 1, res.output
        assert "Traceback" not in res.output and "RecursionError" not in res.output
        assert res.output.strip().startswith("Error: query:") and len(res.output.strip().splitlines()) == 1, res.output


def test_cross_joins_and_too_many_joins_are_refused(session):
    joined = "SELECT a.clip_id FROM clips a " + " ".join(f"JOIN clips j{i} ON a.clip_id = j{i}.clip_id" for i in range(5))
    for sql in (CROSS_5, "SELECT * FROM clips a CROSS JOIN clips b", "SELECT * FROM clips a JOIN drives d ON true",
                "SELECT * FROM clips NATURAL JOIN drives"):
        with pytest.raises(MiningError, match="cross joins are not allowed"):
            session.query(sql)
    with pytest.raises(MiningError) as ei:
        session.query(joined)
    assert ei.value.limit == "max_joins" and "5 joins, more than max_joins = 4" in one_line(ei.value)
    # four key joins are fine, and the limit is configurable
    four = "SELECT a.clip_id FROM clips a " + " ".join(f"JOIN clips j{i} ON a.clip_id = j{i}.clip_id" for i in range(4))
    assert session.query(four).height == 0
    check_query(joined, limits=QueryLimits(max_joins=5))


def test_limits_are_configurable_and_in_bounds_queries_run(session):
    assert session.query("SELECT clip_id FROM clips WHERE " + " OR ".join(f"duration_s = {i}" for i in range(400))).height == 0
    assert session.query("SELECT clip_id FROM clips WHERE " + "(" * 30 + "duration_s > 1" + ")" * 30).height == 0
    check_query(OR_2000, limits=QueryLimits(max_terms=5000))
    with pytest.raises(MiningError) as ei:
        check_query("SELECT * FROM clips WHERE duration_s > 1 AND duration_s < 2 AND duration_s <> 3", limits=QueryLimits(max_terms=1))
    assert ei.value.limit == "max_terms"
    with pytest.raises(ConfigError) as ei2:
        QueryLimits(max_rows=0)
    assert ei2.value.field == "max_rows"


def test_row_cap(session):
    session._cache["clips"] = pl.LazyFrame({"clip_id": [f"c{i}" for i in range(10)]})
    session.limits = QueryLimits(max_rows=5)
    with pytest.raises(MiningError) as ei:
        session.query("SELECT clip_id FROM clips")
    msg = one_line(ei.value)
    assert ei.value.limit == "max_rows" and "more than max_rows = 5 rows" in msg and "--max-rows" in msg and "LIMIT" in msg
    assert session.query("SELECT clip_id FROM clips LIMIT 5").height == 5
    session.limits = QueryLimits(max_rows=10)
    assert session.query("SELECT clip_id FROM clips").height == 10


def _slow_clips(seconds: float) -> pl.LazyFrame:
    def build() -> pl.DataFrame:
        time.sleep(seconds)
        return pl.DataFrame({"clip_id": ["c0"]})

    return pl.defer(build, schema={"clip_id": pl.String})


def test_time_limit(session):
    session._cache["clips"] = _slow_clips(3.0)
    session.limits = QueryLimits(time_limit_s=0.2)
    t0 = time.perf_counter()
    with pytest.raises(MiningError) as ei:
        session.query("SELECT clip_id FROM clips")
    assert time.perf_counter() - t0 < 2.0
    msg = one_line(ei.value)
    assert ei.value.limit == "time_limit_s" and "exceeded the time limit of 0.2 s" in msg and "--time-limit" in msg
    # within the limit the result comes back; polars errors from the worker thread still surface
    assert collect_bounded(_slow_clips(0.0), QueryLimits(time_limit_s=30)).height == 1
    with pytest.raises(pl.exceptions.PolarsError):
        collect_bounded(pl.LazyFrame({"a": ["x"]}).select(pl.col("a").cast(pl.Int64, strict=True)), QueryLimits(time_limit_s=30))


def test_cli_max_rows_and_time_limit(tmp_path, monkeypatch):
    from fleet_cli.mine import mine

    (tmp_path / "store").mkdir()
    frames = {"clips": pl.LazyFrame({"clip_id": [f"c{i}" for i in range(10)]})}
    monkeypatch.setattr(MiningSession, "_build", lambda self, name: frames.get(name, pl.LazyFrame({"clip_id": []}, schema={"clip_id": pl.String})))
    res = CliRunner().invoke(mine, ["SELECT clip_id FROM clips", "--store", str(tmp_path / "store"), "--max-rows", "3", "--json"])
    assert res.exit_code == 1 and "more than max_rows = 3 rows; raise --max-rows or add LIMIT" in res.output, res.output
    res = CliRunner().invoke(mine, ["SELECT clip_id FROM clips", "--store", str(tmp_path / "store"), "--max-rows", "10", "--json"])
    assert res.exit_code == 0 and res.output.count("clip_id") == 10, res.output
    frames["clips"] = _slow_clips(3.0)
    res = CliRunner().invoke(mine, ["SELECT clip_id FROM clips", "--store", str(tmp_path / "store"), "--time-limit", "0.2"])
    assert res.exit_code == 1 and "exceeded the time limit of 0.2 s" in res.output, res.output


# ----------------------------------------------------------------------------------------
# a) the dataset spec's query goes through the same guard
# ----------------------------------------------------------------------------------------
def _write_spec(tmp_path: Path, **kw) -> Path:
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(dict(BASE_SPEC, **kw)))
    return f


def test_spec_file_reading_queries_are_refused(tmp_path, outside):
    pq_file, csv_file = outside
    cases = [
        ("sql", f"SELECT * FROM read_parquet('{pq_file}')"),
        ("sql", f"SELECT * FROM read_csv('{csv_file}')"),
        ("sql", "SELECT * FROM read_csv('/etc/passwd')"),
        ("sql", f"SELECT c.clip_id FROM clips c JOIN read_parquet('{pq_file}') o ON c.clip_id = o.clip_id"),
        ("sql", f"SELECT * FROM '{pq_file}'"),
        ("sql", "SELECT * FROM clips; SELECT * FROM clips"),
        ("where", f"clip_id IN (SELECT clip_id FROM read_parquet('{pq_file}'))"),
        ("where", f"true UNION SELECT * FROM read_csv('{csv_file}')"),
    ]
    for fld, text in cases:
        f = _write_spec(tmp_path, **{fld: text})
        with pytest.raises(ConfigError) as ei:
            load_spec(f)
        msg = one_line(ei.value)
        assert ei.value.path == str(f) and ei.value.field == fld, msg
        assert msg.startswith(f"{f}: {fld}: ") and SECRET not in msg and "root:x" not in msg, msg


def test_selection_refuses_file_reads_even_without_parse_spec(outside):
    """A spec built in code (not read by parse_spec) is checked again when the selection runs."""
    pq_file, csv_file = outside
    df = pl.DataFrame({"clip_id": ["a", "b"], "duration_s": [1.0, 2.0]})
    for sql in (f"SELECT * FROM read_parquet('{pq_file}')", f"SELECT * FROM read_csv('{csv_file}')", "SELECT * FROM read_csv('/etc/passwd')"):
        spec = DatasetSpec(name="unit", cameras=("front",), frames_per_clip=1, frame_rate_hz=1.0, resolution=(96, 64), sql=sql, path="code.yaml")
        with pytest.raises(ConfigError) as ei:
            _apply_query(df, spec)
        msg = one_line(ei.value)
        assert ei.value.field == "sql" and "not allowed" in msg and SECRET not in msg and "root:" not in msg, msg
    # an in-bounds spec query still selects
    ok = DatasetSpec(name="unit", cameras=("front",), frames_per_clip=1, frame_rate_hz=1.0, resolution=(96, 64), where="duration_s > 1.5")
    assert _apply_query(df, ok)["clip_id"].to_list() == ["b"]


def test_spec_query_limits(tmp_path, monkeypatch):
    for fld, text, limit in (("sql", OR_5500, "max_chars"), ("where", " OR ".join(f"duration_s = {i}" for i in range(600)), "max_terms"),
                             ("where", "(" * 3000 + "duration_s > 1" + ")" * 3000, "max_nesting"), ("sql", CROSS_5, None)):
        f = _write_spec(tmp_path, **{fld: text})
        with pytest.raises(ConfigError) as ei:
            load_spec(f)
        msg = one_line(ei.value)
        assert ei.value.field == fld, msg
        assert (f"raise limits.{limit} in the spec" in msg) if limit else "cross joins" in msg
    # the spec raises its own limits; they are part of its identity only when given
    spec = load_spec(_write_spec(tmp_path, where=" OR ".join(f"duration_s = {i}" for i in range(600)), limits={"max_terms": 1000}))
    assert spec.query_limits.max_terms == 1000 and spec.query_limits.max_rows is None
    assert '"limits":{"max_terms":1000}' in spec.to_json()
    assert "limits" not in parse_spec(dict(BASE_SPEC, where="duration_s > 1")).to_json()
    from fleetcore.datasets.spec import spec_from_json

    assert spec_from_json(spec.to_json()).query_limits.max_terms == 1000
    for bad, fld in (({"max_rows": 0}, "limits.max_rows"), ({"bogus": 1}, "limits.bogus"), ({"time_limit_s": "x"}, "limits.time_limit_s"),
                     ([1], "limits"), ([], "limits")):
        with pytest.raises(ConfigError) as ei:
            load_spec(_write_spec(tmp_path, where="duration_s > 1", limits=bad))
        assert ei.value.field == fld
    # row cap and time limit at selection time
    df = pl.DataFrame({"clip_id": [f"c{i}" for i in range(10)], "duration_s": [float(i) for i in range(10)]})
    capped = parse_spec(dict(BASE_SPEC, where="duration_s >= 0", limits={"max_rows": 5}), path="s.yaml")
    with pytest.raises(ConfigError) as ei:
        _apply_query(df, capped)
    assert ei.value.field == "where" and "more than max_rows = 5 rows; raise limits.max_rows in the spec" in one_line(ei.value)
    assert _apply_query(df, parse_spec(dict(BASE_SPEC, where="duration_s >= 0"))).height == 10  # no row cap by default
    import fleetcore.datasets.selection as selection

    monkeypatch.setattr(selection, "_query_frames", lambda df: {"clips": _slow_clips(3.0)})
    slow = parse_spec(dict(BASE_SPEC, sql="SELECT clip_id FROM clips", limits={"time_limit_s": 0.2}), path="s.yaml")
    with pytest.raises(ConfigError) as ei:
        _apply_query(df, slow)
    assert ei.value.field == "sql" and "exceeded the time limit of 0.2 s (time_limit_s); raise limits.time_limit_s" in one_line(ei.value)


def test_spec_polars_error_is_one_line():
    df = pl.DataFrame({"clip_id": ["a"], "duration_s": [1.0]})
    with pytest.raises(ConfigError) as ei:
        _apply_query(df, parse_spec(dict(BASE_SPEC, where="no_such_column = 1"), path="s.yaml"))
    assert ei.value.field == "where" and "no_such_column" in one_line(ei.value)


def test_saved_spec_with_many_clip_ids_raises_its_own_size_limit(tmp_path):
    from fleet_cli.mine import save_dataset_spec

    ids = [f"veh-{i:04d}_drive-{i:04d}_clip-{i:06d}" for i in range(1000)]
    path = save_dataset_spec("many", "SELECT clip_id FROM clips c JOIN drives d USING (drive_id)", pl.DataFrame({"clip_id": ids}),
                             path=tmp_path / "many.yaml", store="/s", filters_active=True, uses_only_clips=False, cameras=["front"],
                             frames_per_clip=1, frame_rate_hz=1.0, resolution=(96, 64))
    spec = load_spec(path)
    assert len(spec.sql or "") > 20_000 and spec.query_limits.max_chars == len(spec.sql or "")


def test_errors_are_fleet_errors():
    assert issubclass(QueryRefused, FleetError) and issubclass(MiningError, FleetError)
