"""`fleet store info|gc|verify` and `fleet erase`: a clip store's generations, retention, integrity and erasure."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict
from typing import Any

import click

from fleetcore.errors import FleetError


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _date(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        d = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: expected an ISO date or time (2026-11-20 or 2026-11-20T12:00:00Z)") from exc
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


@click.group("store")
def store() -> None:
    """A clip store's generations and their retention."""


@store.command("info")
@click.argument("root")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def info(root: str, as_json: bool) -> None:
    """The store's manifest revision and each drive's generations (current last)."""
    from fleetcore.store.layout import StoreLayout
    from fleetcore.store.manifest import read_manifest

    try:
        man = read_manifest(StoreLayout(root))
    except FleetError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [{"drive": k, "generations": [{"config_version": g.config_version, "clips": g.clips, "shards": len(g.shards),
                                          "committed_utc": g.committed_utc, "current": i == len(gens) - 1} for i, g in enumerate(gens)]}
            for k, gens in sorted(man.drives.items())]
    if as_json:
        _echo_json({"revision": man.revision, "drives": rows})
        return
    click.echo(f"{root}: revision {man.revision}, {len(rows)} drives, config versions {', '.join(man.config_versions()) or '-'}")
    for r in rows:
        gens = ", ".join(f"{g['config_version']}{' (current)' if g['current'] else ''}: {g['clips']} clips" for g in r["generations"])
        click.echo(f"  {r['drive']}: {gens}")


@store.command("verify")
@click.argument("root")
@click.option("--decode/--no-decode", default=True, show_default=True, help="also decode every member (JPEG, JSON, telemetry)")
@click.option("--json", "as_json", is_flag=True, help="print the problems as JSON")
def verify(root: str, decode: bool, as_json: bool) -> None:
    """Check the store ROOT (path or URI): shard sha256 against the manifest, members decode, catalog
    rows match shard members. One line per problem; exit status 1 when there is any."""
    verify_store_command(root, decode=decode, as_json=as_json)


def verify_store_command(root: str, *, decode: bool = True, as_json: bool = False) -> None:
    """``fleet store verify`` (also ``fleet verify --store``): prints the problems, exits 1 on any."""
    from fleetcore.store.verify import verify_clip_store

    problems = verify_clip_store(root, decode=decode)
    if as_json:
        _echo_json({"store": root, "ok": not problems, "problems": [asdict(p) for p in problems]})
    elif not problems:
        click.echo(f"{root}: OK")
    else:
        for p in problems:
            click.echo(str(p))
    if problems:
        raise click.ClickException(f"{root}: {len(problems)} problem(s)")


@store.command("gc")
@click.argument("root")
@click.option("--keep", default=2, show_default=True, type=click.IntRange(1), help="generations kept per drive (the current one included)")
@click.option("--older-than", "older_than", default=None, help="also collect superseded generations committed before this date/time (UTC)")
@click.option("--dry-run", is_flag=True, help="list what would be collected, remove nothing")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def gc(root: str, keep: int, older_than: str | None, dry_run: bool, as_json: bool) -> None:
    """Collect superseded generations (never a drive's current one) and write an audit record."""
    from fleetcore.store.layout import StoreLayout
    from fleetcore.store.retention import collect

    try:
        res = collect(StoreLayout(root), keep=keep, before=_date(older_than), dry_run=dry_run)
    except FleetError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(asdict(res))
        return
    verb = "would collect" if dry_run else "collected"
    click.echo(f"{root}: {verb} {len(res.removed_generations)} generations ({res.files_removed} files, {res.bytes_removed} bytes)")
    for g in res.removed_generations:
        click.echo(f"  {g['drive']} {g['config_version']} (committed {g['committed_utc']})")


@click.command("erase")
@click.option("--store", "root", required=True, help="clip store root (path or URI)")
@click.option("--vehicle", required=True, help="vehicle id whose data is erased")
@click.option("--drive", default=None, help="only this drive of the vehicle")
@click.option("--datasets-root", default=None, type=click.Path(file_okay=False), help="also find built datasets holding the data here")
@click.option("--rebuild-datasets", is_flag=True, help="rebuild those datasets without the data and remove the versions that held it")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def erase(ctx: click.Context, root: str, vehicle: str, drive: str | None, datasets_root: str | None, rebuild_datasets: bool,
          as_json: bool) -> None:
    """Erase a vehicle's (or one drive's) data from the clip store: shards, catalog, telemetry,
    records; lists the built datasets that contained it, and writes an audit record."""
    from fleetcore.datasets.manifest import datasets_holding
    from fleetcore.store.layout import StoreLayout
    from fleetcore.store.retention import erase as erase_store

    if rebuild_datasets and not datasets_root:
        raise click.UsageError("--rebuild-datasets needs --datasets-root")
    try:
        held = datasets_holding(datasets_root, vehicle_id=vehicle, drive_id=drive) if datasets_root else []
        res = erase_store(StoreLayout(root), vehicle_id=vehicle, drive_id=drive, datasets=held)
        rebuilt = _rebuild(held, root, datasets_root) if rebuild_datasets else []
    except FleetError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json({**asdict(res), "rebuilt": rebuilt})
        return
    what = f"{vehicle}/{drive}" if drive else vehicle
    click.echo(f"erased {what}: {len(res.drives)} drives, {res.clips} clips, {res.files_removed} files ({res.bytes_removed} bytes); audit {res.audit_record}")
    for d in res.datasets:
        click.echo(f"  dataset {d['name']}@{d['version']} held {d['samples']} samples of it ({d['path']})")
    for r in rebuilt:
        click.echo(f"  rebuilt {r['name']}: {r['old']} -> {r['new'] or 'nothing left to select'} ({r['samples']} samples); removed {r['removed']}")


def _rebuild(held: list[dict[str, Any]], store_root: str, datasets_root: str) -> list[dict[str, Any]]:
    """Build each dataset again from its stored spec over the erased store, then remove the version
    that held the erased samples."""
    from fleetcore.datasets.build import DatasetError
    from fleetcore.datasets.spec import spec_from_json
    from pipelines.build_dataset import run_build_dataset

    out = []
    for d in held:
        try:
            res = run_build_dataset(spec_from_json(d["spec"], path=d["path"]), store=store_root, datasets_root=datasets_root,
                                    beam_args=["--runner=FnApiRunner"])
            new, samples = res.version, res.samples
        except DatasetError as exc:
            if exc.code != "empty_selection":
                raise
            new, samples = None, 0  # nothing left to select: the old version goes all the same
        shutil.rmtree(d["path"])
        out.append({"name": d["name"], "old": d["version"], "new": new, "samples": samples, "removed": d["path"]})
    return out


COMMANDS: list[click.Command] = [store, erase]
