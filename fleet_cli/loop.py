"""``fleet predictions import``, ``fleet index build``, ``fleet triggers from-disagreement`` and
``fleet triggers campaign`` (docs/loop.md). ``fleet mine --like`` lives with ``fleet mine``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from fleet_cli.mine import _echo_json, _fail, _filters, triggers
from fleetcore.errors import FleetError

log = logging.getLogger(__name__)


@click.group("predictions")
def predictions() -> None:
    """Model predictions joined to the store's clips (the `predictions` table of `fleet mine`)."""


@predictions.command("import")
@click.argument("parquet", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", required=True, help="clip store root (a local path or a URI: s3://bucket/store)")
@click.option("--model", required=True, help="NAME@VERSION of the model that made the predictions")
@click.option("--json", "as_json", is_flag=True)
def import_cmd(parquet: str, store: str, model: str, as_json: bool) -> None:
    """Import PARQUET (per-clip or per-frame rows; joined by clip_id or by vehicle and time) as MODEL's
    predictions, replacing that model version's earlier rows."""
    from fleetcore.loop.predictions import import_predictions

    try:
        res = import_predictions(store, parquet, model)
    except FleetError as exc:
        raise _fail(exc) from exc
    if as_json:
        _echo_json(res.to_dict())
        return
    click.echo(f"{res.model}: {res.rows} rows for {res.clips} clips in {res.drives} drives (joined by {res.join}; "
               f"{res.unmatched} rows matched no clip)" + (f"; ignored columns: {', '.join(res.ignored_columns)}" if res.ignored_columns else ""))


@click.group("index")
def index_group() -> None:
    """The similarity index of `fleet mine --like` (LanceDB, under <store>/vectors/)."""


@index_group.command("build")
@click.option("--store", required=True, help="clip store root")
@click.option("--config", "config", default=None, type=click.Path(exists=True, dir_okay=False),
              help="loop config (YAML/JSON) with an image model: image: {path: model.onnx, input_size: [W, H], ...}")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["telemetry", "image"]),
              help="embeddings to build (default: telemetry, plus image with a config that has one)")
@click.option("--json", "as_json", is_flag=True)
def index_build(store: str, config: str | None, kinds: tuple[str, ...], as_json: bool) -> None:
    """Embed the store's clips (telemetry shape; images with an ONNX model) into the vector index."""
    from fleetcore.loop.embeddings import load_loop_config
    from fleetcore.loop.index import build_index

    try:
        cfg = load_loop_config(config) if config else {}
        res = build_index(store, image_model=cfg.get("image"), kinds=list(kinds) or None)
    except FleetError as exc:
        raise _fail(exc) from exc
    if as_json:
        _echo_json(res.to_dict())
        return
    click.echo(f"index {res.path}: " + ", ".join(f"{k} {n} rows (dim {res.dims[k]})" for k, n in res.rows.items()))


@triggers.command("from-disagreement")
@click.option("--model", required=True, help="NAME@VERSION of imported predictions")
@click.option("--metric", required=True, type=click.Choice(["steering", "speed", "accel", "trajectory", "label", "low_confidence"]))
@click.option("--threshold", default=None, type=float, help="fire above this value (default: the metric's, docs/loop.md)")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="trigger YAML to write")
@click.option("--name", default=None, help="trigger name (default disagree_<model>_<metric>)")
@click.option("--min-duration", "min_duration_s", default=0.3, show_default=True, type=click.FloatRange(0))
@click.option("--pre-roll", "pre_roll_s", default=3.0, show_default=True, type=click.FloatRange(0))
@click.option("--post-roll", "post_roll_s", default=3.0, show_default=True, type=click.FloatRange(0))
@click.option("--cooldown", "cooldown_s", default=5.0, show_default=True, type=click.FloatRange(0))
@click.option("--priority", default=80, show_default=True, type=int)
@click.option("--label", default=None, help="with --metric label: the auto-label compared (default manoeuvre)")
def from_disagreement(model: str, metric: str, threshold: float | None, out: str, name: str | None, min_duration_s: float,
                      pre_roll_s: float, post_roll_s: float, cooldown_s: float, priority: int, label: str | None) -> None:
    """Write a trigger that fires where MODEL disagrees with the driver or the auto-labels (backtest it
    with `fleet triggers backtest OUT --store S`)."""
    from fleetcore.loop.disagreement import disagreement_trigger, write_trigger

    try:
        doc = disagreement_trigger(model, metric, threshold, name=name, min_duration_s=min_duration_s, pre_roll_s=pre_roll_s,
                                   post_roll_s=post_roll_s, cooldown_s=cooldown_s, priority=priority, label=label)
        spec = write_trigger(doc, out)
    except FleetError as exc:
        raise _fail(exc) from exc
    click.echo(f"trigger {spec.name}: {spec.where} (model {spec.model}) -> {out}")


@triggers.command("campaign")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--name", required=True, help="campaign name ([a-z0-9_]+)")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="campaign JSON to write")
@click.option("--description", default="")
@click.option("--store", default=None, help="backtest the triggers on this store and record the expected cost")
@click.option("--max-clips-per-day", default=None, type=click.IntRange(1))
@click.option("--max-bytes-per-day", default=None, type=click.IntRange(1))
@click.option("--expires", "expires_utc", default=None, help="ISO date/time the campaign ends (UTC)")
def campaign_cmd(files: tuple[str, ...], name: str, out: str, description: str, store: str | None, max_clips_per_day: int | None,
                 max_bytes_per_day: int | None, expires_utc: str | None) -> None:
    """Export the triggers of FILES as a campaign file for a vehicle-side logger (docs/campaigns.md)."""
    from fleetcore.loop.disagreement import campaign, write_campaign
    from fleetcore.triggers.library import load_triggers

    try:
        specs = load_triggers(list(files))
        bt: dict[str, Any] | None = None
        if store:
            from fleetcore.query.backtest import backtest

            bt = backtest(store, specs, filters=_filters(None, None, None, None, None), examples=0).summary()
        doc = campaign(specs, name=name, description=description, backtest=bt, max_clips_per_day=max_clips_per_day,
                       max_bytes_per_day=max_bytes_per_day, expires_utc=expires_utc)
        path = write_campaign(doc, Path(out))
    except FleetError as exc:
        raise _fail(exc) from exc
    click.echo(f"campaign {name}: {len(doc['triggers'])} trigger(s), {len(doc['models'])} model(s) -> {path}")
    if bt is not None:
        click.echo(json.dumps(doc["backtest"], sort_keys=True))


COMMANDS: list[click.Command] = [predictions, index_group]
