"""`fleet mine QUERY`, `fleet triggers backtest FILE.yaml`, `fleet coverage`: clip mining from the command line.

See ``docs/mining.md``. The commands are thin: the work is in ``fleetcore.query.mining``,
``fleetcore.query.preview``, ``fleetcore.query.backtest`` and ``fleetcore.query.coverage``; ``--save-dataset`` calls
``pipelines.build_dataset`` (the only place the CLI reaches into pipelines).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import click
import polars as pl
import yaml

from fleetcore.errors import FleetError

log = logging.getLogger(__name__)

DEFAULT_DATASETS_ROOT = "data/datasets"


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _filters(bbox: str | None, near: str | None, since: str | None, until: str | None, now: str | None) -> Any:
    from fleetcore.query.mining import Filters, MiningError, parse_bbox, parse_near

    now_dt = None
    if now is not None:
        try:
            now_dt = dt.datetime.fromisoformat(now)
        except ValueError as exc:
            raise MiningError(f"--now {now!r}", f"expected an ISO date/time ({exc})") from exc
    return Filters(
        bbox=parse_bbox(bbox) if bbox else None, near=parse_near(near) if near else None, since=since, until=until, now=now_dt,
    )


def _print_table(df: pl.DataFrame, limit: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, title=f"{df.height} rows" + (f" (first {limit} shown)" if df.height > limit else ""))
    for c in df.columns:
        table.add_column(c, overflow="fold")
    for row in df.head(limit).iter_rows():
        table.add_row(*("" if v is None else ", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in row))
    Console(width=max(120, 18 * len(df.columns)), soft_wrap=False).print(table)


def _jsonable(df: pl.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.write_json())


def save_dataset_spec(name: str, query: str, result: pl.DataFrame, *, path: Path, store: str, filters_active: bool,
                      uses_only_clips: bool, cameras: list[str], frames_per_clip: int, frame_rate_hz: float,
                      resolution: tuple[int, int], privacy_required: bool = True) -> Path:
    """Write a dataset spec whose ``sql:`` selects the query's clips. A query over ``clips`` alone
    without filters is kept as is; otherwise (joins with other tables, --since/--bbox ...) the spec
    lists the selected clip ids, with the original query in its description, since dataset specs
    see only the ``clips`` table."""
    from fleetcore.store.fs import atomic_write_bytes
    from fleetcore.query.mining import MiningError

    if "clip_id" not in result.columns:
        raise MiningError("--save-dataset", "needs a clip_id column in the result")
    if uses_only_clips and not filters_active:
        sql = query.strip().rstrip(";")
        desc = "saved by `fleet mine`"
    else:
        ids = sorted(set(result["clip_id"].cast(pl.String).to_list()))
        if not ids:
            raise MiningError("--save-dataset", "the query selects no clips")
        quoted = ",\n  ".join("'" + i.replace("'", "''") + "'" for i in ids)
        sql = f"SELECT * FROM clips WHERE clip_id IN (\n  {quoted}\n)"
        desc = "saved by `fleet mine` from: " + " ".join(query.split())
    doc: dict[str, Any] = {
        "name": name, "description": desc, "store": store, "sql": sql, "cameras": cameras, "frames_per_clip": frames_per_clip,
        "frame_rate_hz": frame_rate_hz, "resolution": list(resolution), "privacy_required": privacy_required,
    }
    from fleetcore.datasets.spec import DATASET_LIMITS

    if len(sql) > DATASET_LIMITS.max_chars:  # a long list of clip ids: the spec raises its own size limit
        doc["limits"] = {"max_chars": len(sql)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(str(path), yaml.safe_dump(doc, sort_keys=False, width=100).encode())
    return path


def _tables_used(query: str) -> set[str]:
    import sqlglot
    from sqlglot import exp

    stmt = sqlglot.parse_one(query)
    ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    return {t.name.lower() for t in stmt.find_all(exp.Table)} - ctes


@click.command("mine", context_settings={"ignore_unknown_options": False})
@click.argument("query", required=False)
@click.option("--store", required=True, help="clip store root (a local path or a URI: s3://bucket/store)")
@click.option("--bbox", default=None, help="minlon,minlat,maxlon,maxlat: clips whose bbox intersects it")
@click.option("--near", default=None, help="lat,lon,radius_m: clips whose bbox centre is within radius_m")
@click.option("--since", default=None, help="30d | 12h | 2w | YYYY-MM-DD (inclusive)")
@click.option("--until", default=None, help="30d | 12h | 2w | YYYY-MM-DD (inclusive)")
@click.option("--now", default=None, hidden=True, help="reference time for relative --since/--until (ISO, tests)")
@click.option("--json", "as_json", is_flag=True, help="print rows as JSON")
@click.option("--parquet", "parquet", default=None, type=click.Path(dir_okay=False), help="write rows to a Parquet file")
@click.option("--count", "count", is_flag=True, help="print counts with trigger and label breakdowns")
@click.option("--preview", default=None, type=click.Path(), help="FILE.png: contact sheet; DIR: HTML page with MP4s")
@click.option("--camera", default=None, help="camera for previews (default front)")
@click.option("--max-clips", default=24, show_default=True, type=click.IntRange(1, 1000), help="clips in a preview")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="rows shown in the terminal table")
@click.option("--max-rows", default=1_000_000, show_default=True, type=click.IntRange(1),
              help="refuse a result of more rows (add LIMIT to the query to take the first ones)")
@click.option("--time-limit", "time_limit", default=60.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="seconds the query may compute before it is refused")
@click.option("--save-dataset", "save_dataset", default=None, help="write a dataset spec NAME and build it")
@click.option("--datasets-root", default=DEFAULT_DATASETS_ROOT, show_default=True, type=click.Path(file_okay=False))
@click.option("--spec-path", default=None, type=click.Path(dir_okay=False), help="where to write the spec (default DATASETS_ROOT/specs/NAME.yaml)")
@click.option("--no-build", is_flag=True, help="with --save-dataset: only write the spec")
@click.option("--dataset-cameras", default="front", show_default=True, help="comma-separated cameras of the saved dataset")
@click.option("--frames-per-clip", default=8, show_default=True, type=click.IntRange(1))
@click.option("--frame-rate-hz", default=4.0, show_default=True, type=float)
@click.option("--resolution", default="224x128", show_default=True, help="WxH of the saved dataset's frames")
@click.option("--privacy-required/--no-privacy-required", default=True, show_default=True,
              help="saved dataset refuses clips recorded without privacy blurring")
@click.option("--like", "like", default=None, metavar="CLIP_ID",
              help="clips most similar to CLIP_ID, among those QUERY selects (default all clips); docs/loop.md")
@click.option("--k", "k", default=50, show_default=True, type=click.IntRange(1), help="with --like: how many clips")
@click.option("--embedding", default="telemetry", show_default=True, type=click.Choice(["telemetry", "image"]),
              help="with --like: the telemetry-shape or the image embedding")
@click.option("--like-camera", default=None, help="with --like --embedding image: only this camera of CLIP_ID is the query")
def mine(query: str | None, store: str, bbox: str | None, near: str | None, since: str | None, until: str | None, now: str | None,
         as_json: bool, parquet: str | None, count: bool, preview: str | None, camera: str | None, max_clips: int, limit: int,
         max_rows: int, time_limit: float, save_dataset: str | None, datasets_root: str, spec_path: str | None, no_build: bool, dataset_cameras: str,
         frames_per_clip: int, frame_rate_hz: float, resolution: str, privacy_required: bool, like: str | None = None, k: int = 50,
         embedding: str = "telemetry", like_camera: str | None = None) -> None:
    """Run a read-only SQL QUERY over the store's tables: clips, labels, clip_labels, triggers,
    drives, telemetry_summary, predictions. The query is bounded (docs/mining.md, "Limits"): --max-rows rows,
    --time-limit seconds; on a timeout the command exits and the abandoned computation with it.
    With --like CLIP_ID: the K clips nearest to it among the QUERY's clip_id values."""
    from fleetcore.query.mining import MiningSession
    from fleetcore.queryguard import QueryLimits

    try:
        filters = _filters(bbox, near, since, until, now)
        session = MiningSession.open(store, filters, QueryLimits(max_rows=max_rows, time_limit_s=time_limit))
        if like:
            from fleetcore.loop.index import like_query

            df = like_query(session, like, query, k=k, kind=embedding, camera=like_camera)
            query = query or "SELECT * FROM clips"
        elif not query:
            raise click.UsageError("give a QUERY (or --like CLIP_ID)")
        else:
            df = session.query(query)
        if parquet:
            from fleetcore.store.fs import atomic_write_bytes
            import io

            buf = io.BytesIO()
            df.write_parquet(buf, compression="zstd")
            Path(parquet).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(parquet, buf.getvalue())
            log.info("wrote %d rows to %s", df.height, parquet)
        if preview:
            from fleetcore.query.preview import contact_sheet, html_preview

            if preview.lower().endswith(".png"):
                out = contact_sheet(store, df, preview, camera=camera, max_clips=max_clips)
            else:
                out = html_preview(store, df, preview, camera=camera, max_clips=max_clips)
            click.echo(f"preview: {out}", err=True)
        if save_dataset:
            _save(save_dataset, query, df, store=store, filters_active=filters.active or bool(like), datasets_root=datasets_root, spec_path=spec_path,
                  build=not no_build, cameras=[c.strip() for c in dataset_cameras.split(",") if c.strip()], frames_per_clip=frames_per_clip,
                  frame_rate_hz=frame_rate_hz, resolution=resolution, privacy_required=privacy_required)
        if count:
            _echo_json(session.breakdown(df))
        elif as_json:
            click.echo(json.dumps(_jsonable(df), indent=1, default=str))
        elif not parquet:
            _print_table(df, limit)
    except FleetError as exc:
        raise _fail(exc) from exc


def _save(name: str, query: str, df: pl.DataFrame, *, store: str, filters_active: bool, datasets_root: str, spec_path: str | None,
          build: bool, cameras: list[str], frames_per_clip: int, frame_rate_hz: float, resolution: str,
          privacy_required: bool = True) -> None:
    from fleetcore.query.mining import MiningError

    try:
        w, h = (int(x) for x in resolution.lower().split("x"))
    except ValueError as exc:
        raise MiningError(f"--resolution {resolution!r}", "expected WxH, e.g. 224x128") from exc
    path = Path(spec_path) if spec_path else Path(datasets_root, "specs", f"{name}.yaml")
    used = _tables_used(query)
    spec = save_dataset_spec(name, query, df, path=path, store=store, filters_active=filters_active, uses_only_clips=used <= {"clips"},
                             cameras=cameras, frames_per_clip=frames_per_clip, frame_rate_hz=frame_rate_hz, resolution=(w, h),
                             privacy_required=privacy_required)
    click.echo(f"dataset spec: {spec}", err=True)
    if not build:
        return
    try:
        from pipelines.build_dataset import run_build_dataset
    except ImportError as exc:
        raise MiningError("--save-dataset", f"the dataset builder (pipelines.build_dataset) is not available ({exc}); the spec is at {spec}") from exc
    res = run_build_dataset(str(spec), store=store, datasets_root=datasets_root, beam_args=["--runner=FnApiRunner"])
    click.echo(f"dataset {res.name}@{res.version}: {res.samples} samples, manifest {res.manifest_path}", err=True)


@click.group("triggers")
def triggers() -> None:
    """Trigger tools."""


@triggers.command("backtest")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--store", required=True, help="clip store root (a local path or a URI: s3://bucket/store)")
@click.option("--since", default=None, help="30d | YYYY-MM-DD")
@click.option("--until", default=None, help="30d | YYYY-MM-DD")
@click.option("--now", default=None, hidden=True)
@click.option("--examples", default=5, show_default=True, type=click.IntRange(0))
@click.option("--preview", default=None, type=click.Path(dir_okay=False), help="PNG of thumbnails of sample windows")
@click.option("--camera", default=None)
@click.option("--json", "as_json", is_flag=True)
def backtest_cmd(files: tuple[str, ...], store: str, since: str | None, until: str | None, now: str | None, examples: int,
                 preview: str | None, camera: str | None, as_json: bool) -> None:
    """Run the triggers of FILES (YAML files or folders) over the store's telemetry history."""
    from fleetcore.query.backtest import backtest, window_sheet
    from fleetcore.triggers.library import load_triggers

    try:
        specs = load_triggers(list(files))
        res = backtest(store, specs, filters=_filters(None, None, since, until, now), examples=examples)
        if preview:
            if not res.examples:
                raise click.ClickException("no windows fired: nothing to preview")
            out = window_sheet(store, res.examples, preview, camera=camera)
            click.echo(f"preview: {out}", err=True)
    except FleetError as exc:
        raise _fail(exc) from exc
    s = res.summary()
    if as_json:
        _echo_json(s)
        return
    from rich.console import Console
    from rich.table import Table

    con = Console(width=140)
    con.print(f"[bold]{len(specs)} trigger(s)[/] over {s['drives']} drives ({s['drive_hours']:.2f} h): {s['firings']} firings, "
              f"{s['clips']} clips, {s['clip_hours']:.3f} clip-hours, est. {(s['estimated_bytes'] or 0) / 2**20:.1f} MiB")
    for title, df in (("per day", res.per_day), ("per vehicle", res.per_vehicle)):
        t = Table(title=title)
        for c in df.columns:
            t.add_column(c)
        for row in df.iter_rows():
            t.add_row(*(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row))
        con.print(t)
    for ex in s["examples"]:
        con.print(f"  {ex['drive_id']} [{ex['start_ns'] / 1e9:.2f}, {ex['end_ns'] / 1e9:.2f}] s  {', '.join(ex['triggers'])}")


@click.command("coverage")
@click.option("--store", required=True, help="clip store root (a local path or a URI: s3://bucket/store)")
@click.option("--dims", required=True, help="comma-separated dimensions, e.g. time_of_day,trigger,speed_band")
@click.option("--min-count", default=5, show_default=True, type=click.IntRange(0))
@click.option("--png", default=None, type=click.Path(dir_okay=False), help="write a heatmap PNG")
@click.option("--since", default=None)
@click.option("--until", default=None)
@click.option("--json", "as_json", is_flag=True)
def coverage_cmd(store: str, dims: str, min_count: int, png: str | None, since: str | None, until: str | None, as_json: bool) -> None:
    """Clip counts over label / trigger dimensions; flags empty and thin cells."""
    from fleetcore.query.coverage import coverage_report, render_heatmap

    try:
        rep = coverage_report(store, dims.split(","), min_count=min_count, filters=_filters(None, None, since, until, None))
        if png:
            render_heatmap(rep, png)
            click.echo(f"heatmap: {png}", err=True)
    except FleetError as exc:
        raise _fail(exc) from exc
    if as_json:
        _echo_json(rep.to_dict())
        return
    _print_table(rep.table, 200)
    click.echo(f"{rep.total_clips} clips; {rep.empty_cells.height} empty and {rep.thin_cells.height} thin (< {min_count}) cells of {rep.table.height}")


COMMANDS: list[click.Command] = [mine, triggers, coverage_cmd]
