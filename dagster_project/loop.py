"""The data-engine loop in Dagster (docs/loop.md, "Dagster"): thin assets over ``fleetcore.loop``.

Lineage, group ``loop``::

    clip_catalog -> loop/clip_vectors                      (job index_clips: the similarity index)
    loop/base_dataset -> loop/model_predictions -> loop/disagreement_trigger -> loop/new_clips
                      -> loop/next_dataset (with the dataset diff: what the new version adds)

``LoopSettings`` (a resource) names the dataset the model was trained on, the predictions file
and model, and the disagreement metric; each asset calls one plain function.
"""


import json
from pathlib import Path
from typing import Any, Optional

import dagster as dg

from dagster_project.assets import CLIP_CATALOG, RETRY
from dagster_project.resources import BeamRunner, FleetPaths
from dagster_project.beam_pipes import BeamPipesClient, run_job

GROUP_LOOP = "loop"
CLIP_VECTORS = dg.AssetKey(["loop", "clip_vectors"])
BASE_DATASET = dg.AssetKey(["loop", "base_dataset"])
MODEL_PREDICTIONS = dg.AssetKey(["loop", "model_predictions"])
DISAGREEMENT_TRIGGER = dg.AssetKey(["loop", "disagreement_trigger"])
NEW_CLIPS = dg.AssetKey(["loop", "new_clips"])
NEXT_DATASET = dg.AssetKey(["loop", "next_dataset"])
INDEX_JOB = "index_clips"
LOOP_JOB = "loop_round"


class LoopSettings(dg.ConfigurableResource):
    """One round of the loop. ``base_dataset``: ``name@version`` (or ``name``: the latest) under the
    datasets root, or a version folder; ``predictions_path``: the model's predictions Parquet
    (``fleet predictions import``); ``model``: ``NAME@VERSION``; ``metric`` / ``threshold``: the
    disagreement (``fleet triggers from-disagreement``); ``loop_config``: a loop YAML with an image
    model for the index (empty: telemetry embedding only); ``work_dir``: where the trigger, campaign
    and next spec are written (default ``<datasets_root>/_loop``)."""

    base_dataset: str = ""
    predictions_path: str = ""
    model: str = ""
    metric: str = "steering"
    threshold: Optional[float] = None
    loop_config: str = ""
    work_dir: str = ""

    def work(self, paths: FleetPaths) -> Path:
        p = Path(self.work_dir) if self.work_dir else paths.datasets() / "_loop"
        p.mkdir(parents=True, exist_ok=True)
        return p


def _failure(exc: Exception, what: str) -> dg.Failure:
    return dg.Failure(description=f"{what}: {exc}", allow_retries=False)


@dg.asset(key=CLIP_VECTORS, deps=[CLIP_CATALOG], group_name=GROUP_LOOP, kinds={"lancedb"}, retry_policy=RETRY,
          description="The similarity index of `fleet mine --like` (<store>/vectors/): telemetry-shape and image embeddings.")
def clip_vectors(paths: FleetPaths, loop: LoopSettings) -> dg.MaterializeResult:
    from fleetcore.errors import FleetError
    from fleetcore.loop.embeddings import load_loop_config
    from fleetcore.loop.index import build_index

    try:
        cfg = load_loop_config(loop.loop_config) if loop.loop_config else {}
        res = build_index(paths.store(), image_model=cfg.get("image"))
    except FleetError as exc:
        raise _failure(exc, "index") from exc
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(res.path), "snapshot": res.snapshot,
                                          **{f"{k}_rows": int(v) for k, v in res.rows.items()}, **{f"{k}_dim": int(v) for k, v in res.dims.items()}})


@dg.asset(key=BASE_DATASET, group_name=GROUP_LOOP, kinds={"webdataset"},
          description="The dataset version the model was trained on (LoopSettings.base_dataset).")
def base_dataset(context: dg.AssetExecutionContext, paths: FleetPaths, loop: LoopSettings) -> dict[str, Any]:
    from fleetcore.errors import FleetError
    from fleetcore.datasets.manifest import read_manifest, resolve_dataset

    if not loop.base_dataset:
        raise dg.Failure(description="set resources.loop.config.base_dataset (name@version)", allow_retries=False)
    try:
        path = resolve_dataset(loop.base_dataset, root=paths.datasets())
        doc = read_manifest(path)
    except FleetError as exc:
        raise _failure(exc, "base dataset") from exc
    context.add_output_metadata({"dataset": f"{doc['name']}@{doc['version']}", "samples": len(doc["samples"]),
                                 "path": dg.MetadataValue.path(str(path))})
    return {"path": str(path), "name": doc["name"], "version": doc["version"]}


@dg.asset(key=MODEL_PREDICTIONS, ins={"base": dg.AssetIn(BASE_DATASET)}, deps=[CLIP_CATALOG], group_name=GROUP_LOOP, kinds={"polars"},
          description="The model's predictions joined to the store's clips (the `predictions` table).")
def model_predictions(context: dg.AssetExecutionContext, base: dict[str, Any], paths: FleetPaths, loop: LoopSettings) -> dict[str, Any]:
    from fleetcore.errors import FleetError
    from fleetcore.loop.predictions import import_predictions

    if not (loop.predictions_path and loop.model):
        raise dg.Failure(description="set resources.loop.config.predictions_path and model (NAME@VERSION)", allow_retries=False)
    try:
        res = import_predictions(paths.store(), loop.predictions_path, loop.model)
    except FleetError as exc:
        raise _failure(exc, "predictions import") from exc
    context.add_output_metadata({"model": res.model, "rows": res.rows, "clips": res.clips, "unmatched": res.unmatched, "join": res.join,
                                 "trained_on": f"{base['name']}@{base['version']}"})
    return res.to_dict()


@dg.asset(key=DISAGREEMENT_TRIGGER, ins={"predictions": dg.AssetIn(MODEL_PREDICTIONS)}, group_name=GROUP_LOOP, kinds={"yaml"},
          description="The disagreement trigger, backtested on the store's history, and its campaign file.")
def disagreement_trigger(context: dg.AssetExecutionContext, predictions: dict[str, Any], paths: FleetPaths,
                         loop: LoopSettings) -> dict[str, Any]:
    from fleetcore.errors import FleetError
    from fleetcore.loop import disagreement as D
    from fleetcore.query.backtest import backtest

    work = loop.work(paths)
    try:
        doc = D.disagreement_trigger(predictions["model"], loop.metric, loop.threshold)
        spec = D.write_trigger(doc, work / f"{doc['name']}.yaml")
        res = backtest(paths.store(), [spec], examples=0)
        camp = D.write_campaign(D.campaign([spec], name=spec.name, backtest=res.summary()), work / f"{spec.name}.campaign.json")
    except FleetError as exc:
        raise _failure(exc, "disagreement trigger") from exc
    windows = work / f"{spec.name}.windows.parquet"
    res.windows.write_parquet(windows)
    s = res.summary()
    context.add_output_metadata({"trigger": spec.name, "where": spec.where or "", "firings": s["firings"], "clips": s["clips"],
                                 "clip_hours": float(s["clip_hours"]), "estimated_bytes": int(s["estimated_bytes"] or 0),
                                 "trigger_file": dg.MetadataValue.path(str(spec.source)), "campaign": dg.MetadataValue.path(str(camp))})
    return {"trigger": str(spec.source), "windows": str(windows), "campaign": str(camp), "summary": {k: s[k] for k in ("firings", "clips", "estimated_bytes")}}


@dg.asset(key=NEW_CLIPS, ins={"trigger": dg.AssetIn(DISAGREEMENT_TRIGGER)}, group_name=GROUP_LOOP, kinds={"polars"},
          description="The stored clips the disagreement trigger's windows cover.")
def new_clips(context: dg.AssetExecutionContext, trigger: dict[str, Any], paths: FleetPaths) -> list[str]:
    import polars as pl

    from fleetcore.loop.disagreement import clips_for_windows

    found = clips_for_windows(paths.store(), pl.read_parquet(trigger["windows"]))
    ids = found["clip_id"].to_list()
    context.add_output_metadata({"clips": len(ids), "drives": found.select("vehicle_id", "drive_id").unique().height})
    return ids


@dg.asset(key=NEXT_DATASET, ins={"base": dg.AssetIn(BASE_DATASET), "clips": dg.AssetIn(NEW_CLIPS)}, group_name=GROUP_LOOP,
          kinds={"beam", "webdataset"}, description="The next dataset version: the base dataset plus the new clips, with the diff.")
def next_dataset(context: dg.AssetExecutionContext, base: dict[str, Any], clips: list[str], paths: FleetPaths, beam: BeamRunner,
                 loop: LoopSettings, pipes: BeamPipesClient) -> dict[str, Any]:
    from types import SimpleNamespace

    from fleetcore.errors import FleetError
    from fleetcore.datasets.manifest import diff_datasets, read_manifest
    from fleetcore.loop.disagreement import next_dataset_spec, write_dataset_spec

    try:
        old = read_manifest(base["path"])
        doc = next_dataset_spec(old, clips, store=paths.store())
        spec = write_dataset_spec(doc, loop.work(paths) / f"{old['name']}.next.yaml")
    except FleetError as exc:
        raise _failure(exc, "next dataset") from exc
    # the build job in its own process, through Pipes (Dagster's process never imports Beam)
    _, msg = run_job(context, pipes, beam, "pipelines.build_dataset",
                     ["--spec", str(spec), "--store", paths.store(), "--datasets-root", str(paths.datasets())])
    res = SimpleNamespace(**msg["result"])
    try:
        new = read_manifest(res.path)
    except FleetError as exc:
        raise _failure(exc, "next dataset") from exc
    diff = diff_datasets(old, new)
    md = {"dataset": f"{res.name}@{res.version}", "samples": res.samples, "n_added": diff["n_added"],
          "n_removed": diff["n_removed"], "n_common": diff["n_common"],
          "added": dg.MetadataValue.json(diff["added"][:200]), "path": dg.MetadataValue.path(res.path)}
    (loop.work(paths) / f"{res.name}-{res.version}.diff.json").write_text(json.dumps(diff, indent=1))
    return dg.Output({"path": res.path, "name": res.name, "version": res.version, "diff": diff}, metadata=md)


LOOP_ASSETS = [clip_vectors, base_dataset, model_predictions, disagreement_trigger, new_clips, next_dataset]

index_clips_job = dg.define_asset_job(INDEX_JOB, selection=dg.AssetSelection.assets(CLIP_VECTORS),
                                      description="Embed the store's clips into the similarity index (fleet mine --like).")
loop_round_job = dg.define_asset_job(LOOP_JOB, selection=dg.AssetSelection.assets(BASE_DATASET, MODEL_PREDICTIONS, DISAGREEMENT_TRIGGER,
                                                                                  NEW_CLIPS, NEXT_DATASET),
                                     description="One round: predictions -> disagreement trigger -> new clips -> next dataset version.")
