"""Clip mining: read-only SQL over a clip store's catalog (see ``docs/mining.md``).

Tables registered in a ``pl.SQLContext`` (``register_globals=False``), all lazy scans of the
store's hive-partitioned Parquet (``date=YYYY-MM-DD``); a table the store does not have yet is
registered empty with its contract schema:

* ``clips`` — the clip catalog (``schemas.CLIPS``);
* ``labels`` — labels, long format (``schemas.LABELS`` + ``date``);
* ``clip_labels`` — labels pivoted wide: one row per labelled clip, one column per label name
  (its ``value``; or its ``score`` for a label that only has scores, as dataset specs see
  labels), plus ``<label>_score`` for labels that have both values and scores. The
  alphabetically first labeller wins where two give the same label. (The catalog's ``clips``
  also carries the key labels as typed columns: ``time_of_day``, ``pedestrians`` ...);
* ``triggers`` — trigger events (``schemas.TRIGGER_EVENTS`` + ``date``);
* ``drives`` — the drive index (``schemas.DRIVE_INDEX``);
* ``telemetry_summary`` — per clip speed (m/s and km/h) min/mean/max, peak decel, peak lateral
  accel, bbox and bbox centre;
* ``predictions`` — imported model outputs (``schemas.PREDICTIONS`` + ``date``; ``fleet predictions
  import``, docs/loop.md): per clip (``t_ns`` null) or per frame, ``model`` / ``model_version``;
* ``near_duplicates`` — ``(clip_id, near_duplicate_of)`` across drives, dates and runs: the
  earliest original clip of the same vehicle (by UTC start) whose keyframe hashes are within the
  threshold, null for an original (``fleetcore.labels.dedup.near_duplicates_frame``; computed when
  a query reads it; the catalog's ``near_duplicate_of`` column compares one drive's clips only).

Filters (:class:`Filters`) apply before the query: ``since``/``until`` prune the ``date``
partitions of every table (the scan reads only those files), and relative values (``30d``) also
compare ``clips.start_utc``; geo filters restrict the clip tables (``clips``,
``telemetry_summary``, ``clip_labels``, ``labels``).

Only one bounded ``SELECT`` (or ``WITH ... SELECT``, set operations) over the registered tables
runs: :func:`check_query` (:func:`fleetcore.queryguard.check_sql`) refuses any other statement,
any other table name and any file-reading table function (``read_parquet`` ...), so a query
cannot read or write other files; it also refuses a query over the size, nesting, operator and
join limits of :class:`~fleetcore.queryguard.QueryLimits`, before the SQL parser sees it. The
result is collected within ``max_rows`` and ``time_limit_s`` (``fleet mine --max-rows
--time-limit``). Errors are :class:`MiningError`: a read-only refusal or a failed query with the
position (line/column, where known) and the tables with their columns; a limit in one line
naming it and how to raise it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Final, Mapping, Sequence

import polars as pl

from fleetcore.labels.pivot import clip_labels_frame
from fleetcore.store.catalog import Catalog
from fleetcore.errors import FleetError
from fleetcore.queryguard import QueryLimits, QueryRefused, check_sql, collect_bounded, locate

log = logging.getLogger(__name__)

TABLES: Final = ("clips", "labels", "clip_labels", "triggers", "drives", "telemetry_summary", "near_duplicates", "predictions")
EARTH_RADIUS_M: Final = 6_371_008.8
KMH_PER_MPS: Final = 3.6
_REL_RE: Final = re.compile(r"^(\d+)\s*([dhw])$")
_DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class MiningError(FleetError):
    """A mining query (or option) is invalid or failed.

    ``problem`` says what is wrong; ``line``/``column`` locate it in the query (1-based, where
    known); ``tables`` maps each visible table to its columns (name -> dtype) for the message;
    ``limit`` names the :class:`~fleetcore.queryguard.QueryLimits` bound a query broke (the
    message is then one line).
    """

    def __init__(
        self,
        where: str,
        problem: str,
        *,
        query: str | None = None,
        line: int | None = None,
        column: int | None = None,
        tables: Mapping[str, Mapping[str, str]] | None = None,
        limit: str | None = None,
    ) -> None:
        self.limit = limit
        self.query = query
        self.line = line
        self.column = column
        self.tables = dict(tables or {})
        parts = [problem]
        if line is not None:
            parts.append(f"at line {line}, column {column if column is not None else '?'}")
            if query is not None:
                lines = query.splitlines() or [query]
                if 1 <= line <= len(lines):
                    parts.append("  " + lines[line - 1])
                    if column is not None:
                        parts.append("  " + " " * max(column - 1, 0) + "^")
        if self.tables:
            parts.append("tables:")
            for name, cols in self.tables.items():
                parts.append(f"  {name}(" + ", ".join(f"{c} {t}" for c, t in cols.items()) + ")")
        super().__init__(where, "\n".join(parts))
        self.problem = problem


# --------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    """Pre-query filters. ``bbox`` = (min_lon, min_lat, max_lon, max_lat): clips whose bbox intersects it;
    ``near`` = (lat, lon, radius_m): clips whose bbox centre lies within radius (haversine);
    ``since``/``until``: ``30d`` / ``12h`` / ``2w`` before ``now`` or an inclusive ``YYYY-MM-DD``."""

    bbox: tuple[float, float, float, float] | None = None
    near: tuple[float, float, float] | None = None
    since: str | None = None
    until: str | None = None
    now: dt.datetime | None = None  # default: the current UTC time

    def _now(self) -> dt.datetime:
        now = self.now or dt.datetime.now(dt.timezone.utc)
        return now if now.tzinfo is not None else now.replace(tzinfo=dt.timezone.utc)

    def bounds(self) -> tuple[dt.datetime | None, str | None, dt.datetime | None, str | None]:
        """(since instant, since date, until instant, until date) — instants only for relative values."""
        s_t, s_d = _parse_time(self.since, "since", self._now(), end=False)
        u_t, u_d = _parse_time(self.until, "until", self._now(), end=True)
        if s_d is not None and u_d is not None and s_d > u_d:
            raise MiningError(f"--since {self.since}", f"is after --until {self.until}")
        return s_t, s_d, u_t, u_d

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.bbox, self.near, self.since, self.until))


def _parse_time(value: str | None, what: str, now: dt.datetime, *, end: bool) -> tuple[dt.datetime | None, str | None]:
    if value is None:
        return None, None
    v = value.strip()
    m = _REL_RE.match(v)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"d": dt.timedelta(days=n), "h": dt.timedelta(hours=n), "w": dt.timedelta(weeks=n)}[unit]
        t = now - delta
        return t, t.date().isoformat()
    if _DATE_RE.match(v):
        try:
            dt.date.fromisoformat(v)
        except ValueError as exc:
            raise MiningError(f"--{what} {value!r}", f"not a valid date ({exc})") from exc
        return None, v
    raise MiningError(f"--{what} {value!r}", "expected a relative age like 30d, 12h, 2w or a date YYYY-MM-DD")


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``minlon,minlat,maxlon,maxlat`` -> floats (raises MiningError)."""
    vals = _floats(text, 4, "--bbox", "minlon,minlat,maxlon,maxlat")
    mnlon, mnlat, mxlon, mxlat = vals
    if not (-180 <= mnlon <= 180 and -180 <= mxlon <= 180 and -90 <= mnlat <= 90 and -90 <= mxlat <= 90):
        raise MiningError(f"--bbox {text!r}", "longitudes must be in [-180, 180] and latitudes in [-90, 90]")
    if mnlon > mxlon or mnlat > mxlat:
        raise MiningError(f"--bbox {text!r}", "expected min <= max (minlon,minlat,maxlon,maxlat)")
    return mnlon, mnlat, mxlon, mxlat


def parse_near(text: str) -> tuple[float, float, float]:
    """``lat,lon,radius_m`` -> floats (raises MiningError)."""
    lat, lon, r = _floats(text, 3, "--near", "lat,lon,radius_m")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or r <= 0:
        raise MiningError(f"--near {text!r}", "expected lat in [-90, 90], lon in [-180, 180], radius_m > 0")
    return lat, lon, r


def _floats(text: str, n: int, opt: str, form: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != n:
        raise MiningError(f"{opt} {text!r}", f"expected {n} comma-separated numbers {form}")
    try:
        vals = [float(p) for p in parts]
    except ValueError as exc:
        raise MiningError(f"{opt} {text!r}", f"expected numbers {form} ({exc})") from exc
    if not all(math.isfinite(v) for v in vals):
        raise MiningError(f"{opt} {text!r}", "numbers must be finite")
    return vals


def haversine_m(lat: pl.Expr, lon: pl.Expr, lat0: float, lon0: float) -> pl.Expr:
    """Great-circle distance in metres from (lat0, lon0) (degrees) to the expressions' points."""
    p1, p2 = math.radians(lat0), lat.radians()
    dphi = p2 - p1
    dlmb = lon.radians() - math.radians(lon0)
    a = (dphi / 2).sin() ** 2 + math.cos(p1) * p2.cos() * (dlmb / 2).sin() ** 2
    return 2 * EARTH_RADIUS_M * a.sqrt().clip(upper_bound=1.0).arcsin()


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------
def telemetry_summary_frame(clips: pl.LazyFrame) -> pl.LazyFrame:
    """Per-clip telemetry summary derived from the catalog columns."""
    out = [pl.col(c) for c in ("clip_id", "vehicle_id", "drive_id", "date", "start_utc", "duration_s")]
    for stat in ("min", "mean", "max"):
        out.append(pl.col(f"speed_{stat}_mps"))
        out.append((pl.col(f"speed_{stat}_mps") * KMH_PER_MPS).alias(f"speed_{stat}_kmh"))
    out += [pl.col(c) for c in ("peak_decel_mps2", "peak_lat_accel_mps2", "lat_min", "lat_max", "lon_min", "lon_max")]
    out.append(((pl.col("lat_min") + pl.col("lat_max")) / 2).alias("lat_centre"))
    out.append(((pl.col("lon_min") + pl.col("lon_max")) / 2).alias("lon_centre"))
    return clips.select(out)


def query_columns(sql: str) -> set[str] | None:
    """Column names a query mentions (as written and lower-cased), or None when it selects ``*`` anywhere."""
    import sqlglot
    from sqlglot import exp

    stmt = sqlglot.parse_one(sql)
    if any(True for _ in stmt.find_all(exp.Star)) or any(isinstance(c.this, exp.Star) for c in stmt.find_all(exp.Column)):
        return None
    names = {c.name for c in stmt.find_all(exp.Column)} | {i.name for i in stmt.find_all(exp.Identifier)}
    return names | {n.lower() for n in names}


class MiningSession:
    """The tables of one store under one set of filters (open once, query many).

    Tables are built on first use (:meth:`table`); a query registers only the tables it names, so
    e.g. the label pivot is not computed for a query over ``clips`` alone.
    """

    def __init__(self, store: str, filters: Filters, limits: QueryLimits | None = None) -> None:
        self.store = store
        self.catalog = Catalog(store)  # one manifest revision for every table of the session
        self.filters = filters
        self.limits = limits if limits is not None else QueryLimits()
        self._cache: dict[str, pl.LazyFrame] = {}
        s_t, s_d, u_t, u_d = filters.bounds()
        self._bounds = (s_t, s_d, u_t, u_d)

    @classmethod
    def open(cls, store: str | Path, filters: Filters | None = None, limits: QueryLimits | None = None) -> "MiningSession":
        """A session over a store given as a local path or a URI (``s3://bucket/store``); ``limits``
        bound every query (default :class:`~fleetcore.queryguard.QueryLimits`)."""
        session = cls(str(store), filters or Filters(), limits)
        if not session.catalog.exists_store():
            raise MiningError(str(store), "clip store folder does not exist")
        return session

    def _scan(self, table: str) -> pl.LazyFrame:
        """A store table (empty with its contract schema when the store has none yet), date-filtered."""
        return self._by_date(self.catalog.scan(table, missing_ok=True))  # type: ignore[arg-type]

    def _by_date(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        _, s_d, _, u_d = self._bounds
        if s_d is not None:
            lf = lf.filter(pl.col("date") >= s_d)
        if u_d is not None:
            lf = lf.filter(pl.col("date") <= u_d)
        return lf

    def _geo_filtered(self) -> bool:
        return self.filters.bbox is not None or self.filters.near is not None

    def _build(self, name: str) -> pl.LazyFrame:
        f = self.filters
        s_t, _, u_t, _ = self._bounds
        if name == "clips":
            clips = self._scan("clips")
            if s_t is not None:
                clips = clips.filter(pl.col("start_utc") >= s_t)
            if u_t is not None:
                clips = clips.filter(pl.col("start_utc") <= u_t)
            if f.bbox is not None:
                mnlon, mnlat, mxlon, mxlat = f.bbox
                clips = clips.filter(
                    (pl.col("lon_max") >= mnlon) & (pl.col("lon_min") <= mxlon) & (pl.col("lat_max") >= mnlat) & (pl.col("lat_min") <= mxlat)
                )
            if f.near is not None:
                lat0, lon0, radius = f.near
                lat_c = (pl.col("lat_min") + pl.col("lat_max")) / 2
                lon_c = (pl.col("lon_min") + pl.col("lon_max")) / 2
                clips = clips.filter(haversine_m(lat_c, lon_c, lat0, lon0) <= radius)
            return clips
        if name == "predictions":
            preds = self._scan("predictions")
            if self._geo_filtered() or self._bounds[0] is not None or self._bounds[2] is not None:
                preds = preds.join(self.table("clips").select("clip_id"), on="clip_id", how="semi")
            return preds
        if name == "labels":
            labels = self._scan("labels")
            if self._geo_filtered():
                labels = labels.join(self.table("clips").select("clip_id"), on="clip_id", how="semi")
            return labels
        if name == "clip_labels":
            stored = self._stored_clip_labels()
            if stored is not None:
                return stored
            return clip_labels_frame(self.table("labels"), kinds_from=self._scan("labels"))
        if name in ("triggers", "drives"):
            return self._scan(name)
        if name == "telemetry_summary":
            return telemetry_summary_frame(self.table("clips"))
        if name == "near_duplicates":
            from fleetcore.labels.dedup import near_duplicates_frame

            clips = self.table("clips")  # computed only when a query reads it (pl.defer)
            return pl.defer(lambda: near_duplicates_frame(clips), schema={"clip_id": pl.String, "near_duplicate_of": pl.String})
        raise MiningError("query", f"unknown table {name!r}; tables: {list(TABLES)}")

    def _stored_clip_labels(self) -> pl.LazyFrame | None:
        """The curate job's materialised ``clip_labels`` (pivoted when the labels were written), when every
        generation with a ``labels`` file also lists its wide twin; None to pivot at query time instead."""
        labelled = [g for g in self.catalog.generations() if g.table("labels") is not None]
        if not labelled or any(g.table("clip_labels") is None for g in labelled):
            return None  # labels written some other way (or before the wide table existed): pivot them
        lf = self._by_date(self.catalog.scan("clip_labels"))
        if self._geo_filtered():
            lf = lf.join(self.table("clips").select("clip_id"), on="clip_id", how="semi")
        return lf

    def table(self, name: str) -> pl.LazyFrame:
        """One table (built on first use)."""
        if name not in self._cache:
            self._cache[name] = self._build(name)
        return self._cache[name]

    def _clip_labels_for(self, sql: str) -> pl.LazyFrame:
        """``clip_labels`` pivoting only the labels the query names (all of them for ``SELECT *``)."""
        if "clip_labels" in self._cache:
            return self._cache["clip_labels"]
        stored = self._stored_clip_labels()
        if stored is not None:
            return stored
        cols = query_columns(sql)
        if cols is None:
            return self.table("clip_labels")
        wanted = {c[: -len("_score")] if c.endswith("_score") else c for c in cols} | cols
        return clip_labels_frame(self.table("labels"), kinds_from=self._scan("labels"), only=wanted)

    @property
    def frames(self) -> dict[str, pl.LazyFrame]:
        """Every table (builds them all)."""
        return {name: self.table(name) for name in TABLES}

    def schemas(self) -> dict[str, dict[str, str]]:
        """Every table's columns (name -> polars dtype), for help and error messages."""
        return {name: {c: str(t) for c, t in lf.collect_schema().items()} for name, lf in self.frames.items()}

    def lazy(self, sql: str) -> pl.LazyFrame:
        """The query as a LazyFrame (checked read-only and within the limits first). Raises MiningError."""
        used = check_query(sql, tables=TABLES, describe=self.schemas, limits=self.limits)
        frames = {name: self.table(name) for name in sorted(used) if name != "clip_labels"}
        if "clip_labels" in used:
            frames["clip_labels"] = self._clip_labels_for(sql)
        ctx = pl.SQLContext(frames=frames, register_globals=False)
        try:
            out = ctx.execute(sql, eager=False)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            raise self._error(sql, exc) from exc
        return out

    def query(self, sql: str) -> pl.DataFrame:
        """Run the query within ``max_rows`` and ``time_limit_s``; returns a DataFrame. Raises MiningError."""
        lf = self.lazy(sql)
        try:
            return collect_bounded(lf, self.limits, hint=mine_hint)
        except QueryRefused as exc:
            raise MiningError("query", exc.problem, limit=exc.limit) from exc
        except (pl.exceptions.PolarsError, ValueError) as exc:
            raise self._error(sql, exc) from exc

    def _error(self, sql: str, exc: Exception) -> MiningError:
        msg = str(exc).strip()
        line, col = _position(sql, msg)
        first = (msg.splitlines()[0] if msg else repr(exc)).split("; valid columns")[0]
        return MiningError("query", f"failed: {type(exc).__name__}: {first[:500]}", query=sql, line=line, column=col,
                           tables=self.schemas())


    def breakdown(self, result: pl.DataFrame, *, max_values: int = 50) -> dict[str, Any]:
        """``--count``: rows, clips, and clip counts per trigger, primary trigger and label value.

        Needs a ``clip_id`` column in the result (else only ``rows`` is given)."""
        out: dict[str, Any] = {"rows": result.height}
        if "clip_id" not in result.columns:
            return out
        ids = result.select(pl.col("clip_id").cast(pl.String)).unique()
        out["clips"] = ids.height
        clips = self.table("clips").join(ids.lazy(), on="clip_id", how="semi").select("clip_id", "triggers", "primary_trigger").collect()
        trig = clips.select(pl.col("triggers").explode().alias("trigger")).drop_nulls().group_by("trigger").len()
        out["by_trigger"] = {k: int(v) for k, v in trig.sort(["len", "trigger"], descending=[True, False]).iter_rows()}
        prim = clips.group_by("primary_trigger").len().sort(["len", "primary_trigger"], descending=[True, False])
        out["by_primary_trigger"] = {k: int(v) for k, v in prim.iter_rows()}
        labels = (
            self.table("labels").join(ids.lazy(), on="clip_id", how="semi").filter(pl.col("value").is_not_null())
            .unique(["clip_id", "label", "value"]).group_by("label", "value").len().sort(["label", "len", "value"], descending=[False, True, False])
            .collect()
        )
        by_label: dict[str, dict[str, int]] = {}
        for lab, val, n in labels.iter_rows():
            d = by_label.setdefault(lab, {})
            if len(d) < max_values:
                d[str(val)] = int(n)
        out["by_label"] = by_label
        return out


def run_query(store: str | Path, sql: str, *, filters: Filters | None = None, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Run one read-only SQL query over the store's tables (see the module docstring)."""
    return MiningSession.open(store, filters, limits).query(sql)


# --------------------------------------------------------------------------------------
# Read-only guard
# --------------------------------------------------------------------------------------
def _position(sql: str, msg: str) -> tuple[int | None, int | None]:
    m = re.search(r"Line:\s*(\d+),\s*Column:\s*(\d+)", msg)
    if m:
        return int(m.group(1)), int(m.group(2))
    for pat in (r'unable to find column "([^"]+)"', r"relation '([^']+)' was not found", r'column "([^"]+)"', r"'([A-Za-z_][A-Za-z0-9_]*)'"):
        m = re.search(pat, msg)
        if m:
            pos = locate(sql, m.group(1))
            if pos is not None:
                return pos
    return None, None



_MINE_HINTS: Final = {
    "max_rows": "raise --max-rows or add LIMIT",
    "time_limit_s": "raise --time-limit or narrow the query (--since, --bbox, WHERE)",
}


def mine_hint(limit: str) -> str:
    """How to raise a limit from ``fleet mine`` (the others only through :class:`QueryLimits`)."""
    return _MINE_HINTS.get(limit, f"simplify the query (or raise QueryLimits.{limit} in the Python API)")


def check_query(sql: str, *, tables: Sequence[str] = TABLES, describe: Callable[[], Mapping[str, Mapping[str, str]]] | None = None,
                limits: QueryLimits | None = None) -> set[str]:
    """Refuse anything but one bounded, read-only query over ``tables`` (raises MiningError).

    :func:`fleetcore.queryguard.check_sql`: size, nesting and operator limits on the text and
    tokens first; then exactly one statement, a SELECT / WITH / set operation; every table
    reference a registered table or a CTE of the query; no table function and no function whose
    name reads or writes files (``read_parquet``, ``read_csv``, ``scan_*`` ...), no ``SELECT ...
    INTO``; no cross join and at most ``max_joins`` joins. Returns the names of the tables the
    query reads. ``describe`` gives the tables' columns for the message of a read-only refusal;
    a limit's message is one line.
    """
    names = {t.lower() for t in tables}
    try:
        return check_sql(sql, tables=tables, limits=limits, hint=mine_hint)
    except QueryRefused as exc:
        if exc.limit is not None:
            raise MiningError("query", exc.problem, limit=exc.limit) from exc
        tabs = describe() if describe is not None else {n: {} for n in sorted(names)}
        raise MiningError("query", exc.problem, query=sql if isinstance(sql, str) else None, line=exc.line, column=exc.column,
                          tables=tabs) from exc
