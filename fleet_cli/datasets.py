"""`fleet datasets build|diff|list` and `fleet verify`: training datasets (and, with ``--store``, clip stores) from the command line.

The datasets root (where ``<name>/<version>/`` folders live) comes from ``--root``, else the
``FLEET_DATASETS_ROOT`` environment variable (read when the command runs), else ``data/datasets``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from fleetcore.errors import FleetError
from schemas import SchemaValidationError

DEFAULT_ROOT = "data/datasets"

_root_option = click.option(
    "--root", "root", envvar="FLEET_DATASETS_ROOT", default=DEFAULT_ROOT, show_default=True,
    type=click.Path(file_okay=False), help="datasets root holding <name>/<version>/",
)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@click.group("datasets")
def datasets() -> None:
    """Build, list and compare training datasets (specs in datasets/*.yaml)."""


@datasets.command("build", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", default=None, help="clip store root, a local path or a URI such as s3://bucket/store (overrides the spec's store)")
@_root_option
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def build(ctx: click.Context, spec: str, store: str | None, root: str, as_json: bool) -> None:
    """Build the dataset of SPEC (a no-op when that version exists). Extra arguments go to Beam
    (e.g. --direct_running_mode multi_processing --direct_num_workers 2)."""
    from pipelines.build_dataset import run_build_dataset

    try:
        res = run_build_dataset(spec, store=store, datasets_root=root, beam_args=list(ctx.args))
    except (FleetError, SchemaValidationError) as exc:
        raise _fail(exc) from exc
    if as_json:
        _echo_json(asdict(res))
        return
    state = "built" if res.built else "already built (no-op)"
    click.echo(f"{res.name}@{res.version}: {state}: {res.samples} samples in {res.shards} shards at {res.path}")


@datasets.command("diff")
@click.argument("a")
@click.argument("b")
@_root_option
@click.option("--json", "as_json", is_flag=True, help="print the diff as JSON")
def diff(a: str, b: str, root: str, as_json: bool) -> None:
    """Which clip_ids dataset B adds to and removes from dataset A (paths or name@version)."""
    from fleetcore.datasets.manifest import diff_datasets, read_manifest, resolve_dataset

    try:
        d = diff_datasets(read_manifest(resolve_dataset(a, root=root)), read_manifest(resolve_dataset(b, root=root)))
    except FleetError as exc:
        raise _fail(exc) from exc
    if as_json:
        _echo_json(d)
        return
    click.echo(f"{d['a']} -> {d['b']}: +{d['n_added']} -{d['n_removed']} ={d['n_common']} clips")
    for c in d["added"]:
        click.echo(f"+ {c}")
    for c in d["removed"]:
        click.echo(f"- {c}")


@datasets.command("list")
@_root_option
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def list_cmd(root: str, as_json: bool) -> None:
    """Built dataset versions under the datasets root."""
    from fleetcore.datasets.manifest import list_datasets

    rows = list_datasets(root)
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"no datasets under {root}")
    for r in rows:
        click.echo(f"{r['name']}@{r['version']}  {r['format']:<10} {r['samples']:>7} samples {r['shards']:>4} shards {r['bytes']:>12} bytes  {r['path']}")


@click.command("verify")
@click.argument("dataset", required=False)
@click.option("--store", default=None, help="verify this clip store (path or URI) instead of a dataset (as `fleet store verify`)")
@_root_option
@click.option("--json", "as_json", is_flag=True, help="print the problems as JSON")
def verify(dataset: str | None, store: str | None, root: str, as_json: bool) -> None:
    """Re-check every shard of DATASET (path or name@version): sha256, and that every member decodes.
    Exits non-zero naming the first bad shard and member. With --store STORE, check a clip store."""
    from fleetcore.datasets.manifest import resolve_dataset, verify_dataset

    if (dataset is None) == (store is None):
        raise click.UsageError("give a DATASET or --store STORE")
    if store is not None:
        from fleet_cli.store import verify_store_command

        verify_store_command(store, as_json=as_json)
        return
    try:
        path = resolve_dataset(dataset, root=root)
    except FleetError as exc:
        raise _fail(exc) from exc
    problems = verify_dataset(path)
    if as_json:
        _echo_json({"dataset": str(path), "ok": not problems, "problems": [asdict(p) for p in problems]})
    elif not problems:
        click.echo(f"{path}: OK")
    if problems:
        first = problems[0]
        raise click.ClickException(f"{path}: {len(problems)} problem(s); first bad shard {first.shard!r} member {first.member!r}: {first}")


COMMANDS: list[click.Command] = [datasets, verify]
