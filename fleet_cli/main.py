"""`fleet`: the command line of Fleet Curator.

Every command has ``--help``; long work shows a progress bar; a failure prints one line on stderr
and exits non-zero; ``--json`` prints machine-readable output where a script would want it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleetcore.errors import FleetError
from schemas import SchemaValidationError

log = logging.getLogger("fleet")
out = Console()
err = Console(stderr=True)


def _drop_import_noise(record: logging.LogRecord) -> bool:
    """Beam warns on the root logger, when imported, that optional GCP client libraries are absent."""
    return not (record.name == "root" and "apitools not found" in record.getMessage())


class FleetGroup(click.Group):
    """Turns expected failures into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (FleetError, SchemaValidationError, FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as exc:
            from rich.markup import escape

            # escaped: an error code in brackets ("[no_space]") is text, not Rich markup
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            ctx.exit(1)


@contextmanager
def progress_bar(label: str, *, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    if not enabled or not err.is_terminal and not sys.stderr.isatty():
        # Non-interactive: log a line per step instead of drawing a bar.
        def step(done: int, total: int) -> None:
            log.info("%s: %d/%d", label, done, total)

        yield step
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as prog:
        task = prog.add_task(label, total=None)

        def step(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield step


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@click.group(cls=FleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="more logging (-v info, -vv debug)")
@click.version_option(package_name="fleet-curator")
def cli(verbose: int) -> None:
    """Fleet Curator: fleet video in, labelled, privacy-safe, GPU-ready training shards out."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:
        # Beam logs a failing DoFn's traceback before re-raising it; the CLI prints the error once.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        # cantools warns about every repeated message name of a DBC (the CSS GNSS DBC has nine).
        logging.getLogger("cantools").setLevel(logging.ERROR)
        for handler in logging.getLogger().handlers:
            handler.addFilter(_drop_import_noise)


# --------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------
@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="landing zone root to write")
@click.option("--vehicles", default=3, show_default=True, type=click.IntRange(1))
@click.option("--drives", "drives_per_vehicle", default=2, show_default=True, type=click.IntRange(1), help="drives per vehicle")
@click.option("--cameras", default="4", show_default=True, help="camera count (4: front,left,right,rear; 8: Tesla-style) or a comma list of names")
@click.option("--duration", "duration_s", default=30.0, show_default=True, type=click.FloatRange(min=1.0), help="seconds per drive")
@click.option("--width", default=640, show_default=True, type=click.IntRange(64))
@click.option("--height", default=360, show_default=True, type=click.IntRange(64))
@click.option("--fps", default=20.0, show_default=True, type=click.FloatRange(min=1.0))
@click.option("--telemetry-hz", default=50.0, show_default=True, type=click.FloatRange(min=1.0))
@click.option("--segment-s", default=None, type=click.FloatRange(min=1.0), help="split each camera into segment files of this length")
@click.option("--start-date", default="2026-11-20", show_default=True, help="UTC date of the first drive")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="print the drives written as JSON")
def simulate(out_dir: Path, vehicles: int, drives_per_vehicle: int, cameras: str, duration_s: float, width: int, height: int,
             fps: float, telemetry_hz: float, segment_s: float | None, start_date: str, seed: int, as_json: bool) -> None:
    """Write a synthetic fleet (video, telemetry, ground truth) in the landing format."""
    from fleetcore.simulate import simulate_fleet

    cams: int | list[str] = int(cameras) if cameras.isdigit() else [c.strip() for c in cameras.split(",") if c.strip()]
    with progress_bar("simulating drives") as step:
        refs = simulate_fleet(out_dir, vehicles=vehicles, drives_per_vehicle=drives_per_vehicle, cameras=cams, width=width,
                              height=height, fps=fps, duration_s=duration_s, telemetry_hz=telemetry_hz, seed=seed,
                              start_date=start_date, segment_s=segment_s, progress=step)
    if as_json:
        emit_json([{"vehicle_id": r.vehicle_id, "drive_id": r.drive_id, "path": str(r.path)} for r in refs])
    else:
        out.print(f"simulated {len(refs)} drives into {out_dir}")


# --------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------
@cli.group(name="import")
def import_() -> None:
    """Import real recordings into landing drives."""


def _utc(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _done(ref: Any, as_json: bool) -> None:
    if as_json:
        emit_json({"vehicle_id": ref.vehicle_id, "drive_id": ref.drive_id, "path": str(ref.path)})
    else:
        out.print(f"imported {ref.vehicle_id}/{ref.drive_id} -> {ref.path}")


landing_opt = click.option("--landing", required=True, type=click.Path(file_okay=False, path_type=Path), help="landing zone root")
json_opt = click.option("--json", "as_json", is_flag=True, help="print the drive written as JSON")


@import_.command("dashcam")
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@landing_opt
@click.option("--vehicle", required=True, help="vehicle id")
@click.option("--drive", default=None, help="drive id (default: from the video)")
@click.option("--camera", default="front", show_default=True)
@click.option("--telemetry", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="GPX, NMEA or CSV")
@click.option("--telemetry-format", type=click.Choice(["auto", "gpx", "nmea", "csv"]), default="auto", show_default=True)
@click.option("--start-utc", default=None, help="UTC time of the first frame (ISO 8601); default: container creation time")
@json_opt
def import_dashcam_cmd(video, landing, vehicle, drive, camera, telemetry, telemetry_format, start_utc, as_json):
    """A dashcam video with optional GPX / NMEA / CSV telemetry."""
    from fleetcore.ingest.importers import import_dashcam

    _done(import_dashcam(video, landing, vehicle_id=vehicle, drive_id=drive, camera=camera, telemetry=telemetry,
                         telemetry_format=telemetry_format, start_utc=_utc(start_utc)), as_json)


def _cars_help() -> str:
    return "built-in car (opendbc DBC + mapping): toyota_rav4, toyota_prius, honda_civic"


@import_.command("comma2k19")
@click.argument("segment", type=click.Path(exists=True, file_okay=False, path_type=Path))
@landing_opt
@click.option("--vehicle", default=None, help="vehicle id (default: the dongle id)")
@click.option("--drive", default=None, help="drive id")
@click.option("--car", default=None, help=_cars_help() + "; decodes processed_log/CAN/raw_can (default: by dongle id when raw_can is there)")
@json_opt
def import_comma_cmd(segment, landing, vehicle, drive, car, as_json):
    """A comma2k19 segment (or route) folder: processed_log/ arrays, global_pose/frame_times, video.hevc if present."""
    from fleetcore.ingest.importers import import_comma2k19

    _done(import_comma2k19(segment, landing, vehicle_id=vehicle, drive_id=drive, car=car), as_json)


@import_.command("candump")
@click.argument("log_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@landing_opt
@click.option("--dbc", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="DBC file (default: the car's)")
@click.option("--mapping", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="YAML: column -> DBC signal expression (default: the car's)")
@click.option("--car", default=None, help=_cars_help())
@click.option("--vehicle", required=True)
@click.option("--drive", default=None)
@click.option("--video", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--start-utc", default=None)
@click.option("--max-gap-s", default=3600.0, show_default=True, type=float, help="longest gap allowed between parts of one drive")
@json_opt
def import_candump_cmd(log_files, landing, dbc, mapping, car, vehicle, drive, video, start_utc, max_gap_s, as_json):
    """`candump -L` logs (one drive, in parts) decoded with a DBC file and a signal mapping, or a built-in car."""
    from fleetcore.ingest.importers import import_candump

    _done(import_candump(list(log_files), dbc, mapping, landing, vehicle_id=vehicle, drive_id=drive, car=car, video=video,
                         start_utc=_utc(start_utc), max_gap_s=max_gap_s), as_json)


@import_.command("mdf")
@click.argument("mf4_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@landing_opt
@click.option("--dbc", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="DBC file (default: the car's)")
@click.option("--mapping", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--car", default=None, help=_cars_help())
@click.option("--vehicle", required=True)
@click.option("--drive", default=None)
@click.option("--video", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--max-gap-s", default=3600.0, show_default=True, type=float, help="longest gap allowed between parts of one drive")
@json_opt
def import_mdf_cmd(mf4_files, landing, dbc, mapping, car, vehicle, drive, video, max_gap_s, as_json):
    """ASAM MDF4 (.MF4) bus logs (one drive, in parts) decoded with a DBC file, or a built-in car."""
    from fleetcore.ingest.importers import import_mdf

    _done(import_mdf(list(mf4_files), dbc, landing, vehicle_id=vehicle, drive_id=drive, mapping=mapping, car=car, video=video,
                     max_gap_s=max_gap_s), as_json)


@import_.command("csv")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@landing_opt
@click.option("--profile", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="YAML vendor profile")
@click.option("--vehicle", required=True)
@click.option("--drive", default=None)
@click.option("--video", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_opt
def import_csv_cmd(csv_file, landing, profile, vehicle, drive, video, as_json):
    """A vendor CSV log described by a YAML profile (telemetry-only unless --video is given)."""
    from fleetcore.ingest.importers import import_csv

    _done(import_csv(csv_file, profile, landing, vehicle_id=vehicle, drive_id=drive, video=video), as_json)


@import_.command("mcap")
@click.argument("mcap_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@landing_opt
@click.option("--vehicle", required=True)
@click.option("--drive", default=None, help="drive id (default: <vehicle>_<UTC of the first message>)")
@click.option("--topic", "topics", multiple=True, help="import only this topic (repeatable; default: every supported topic)")
@json_opt
def import_mcap_cmd(mcap_file, landing, vehicle, drive, topics, as_json):
    """An MCAP recording (ROS 2 bag, Foxglove): CompressedVideo / CompressedImage cameras, NavSatFix, Imu, Twist / Odometry."""
    from fleetcore.ingest.importers import import_mcap

    _done(import_mcap(mcap_file, landing, vehicle_id=vehicle, drive_id=drive, topics=list(topics) or None), as_json)


# --------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------
def print_landing_summary(s: dict[str, Any]) -> None:
    t = Table(title=f"landing zone {s['landing']}", show_header=False)
    t.add_row("drives", f"{s['drives_valid']} valid, {s['drives_quarantined']} quarantined, {s['drives_incomplete']} incomplete (of {s['drives_total']})")
    t.add_row("vehicles", str(s["vehicles"]))
    t.add_row("cameras", f"{', '.join(s['cameras'])} ({s['camera_files']} files)")
    t.add_row("video", f"{s['video_hours']:.3f} h ({s['video_frames']} frames)")
    t.add_row("telemetry rows", str(s["telemetry_rows"]))
    if s["ground_truth_events"]:
        t.add_row("ground-truth events", ", ".join(f"{k} {v}" for k, v in s["ground_truth_events"].items()))
    out.print(t)
    if s["quarantine"]:
        q = Table(title="quarantined")
        for c in ("drive", "code", "file", "message"):
            q.add_column(c, overflow="fold")
        for r in s["quarantine"]:
            q.add_row(r["drive"], r["code"], r["file"] or "", r["message"])
        out.print(q)


@cli.command()
@click.argument("landing")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--strict", is_flag=True, help="exit 2 when any drive is quarantined")
def validate(landing: str, as_json: bool, strict: bool) -> None:
    """Validate every drive of a landing zone (a folder or a URI such as s3://bucket/landing); bad drives
    are listed with their reason."""
    from fleetcore.ingest.report import validate_landing
    from fleetcore.store.fs import is_dir

    if not is_dir(landing):
        raise click.BadParameter(f"{landing}: not a folder; expected the landing zone's root", param_hint="LANDING")

    with progress_bar("validating drives") as step:
        rep = validate_landing(landing, progress=step)
    s = rep.summary()
    emit_json(s) if as_json else print_landing_summary(s)
    if strict and rep.quarantined:
        sys.exit(2)


# --------------------------------------------------------------------------------------
# curate
# --------------------------------------------------------------------------------------
_CONFIG_OPTIONS = [
    click.option("--rate-hz", default=10.0, show_default=True, type=float, help="shared sample rate of clip frames"),
    click.option("--max-side", default=640, show_default=True, type=int, help="longest side of stored frames"),
    click.option("--shard-bytes", default=256 * 2**20, show_default=True, type=int, help="target shard size in bytes"),
    click.option("--triggers", multiple=True, help="extra trigger YAML files or folders"),
    click.option("--labels/--no-labels", default=True, show_default=True, help="run the labelling stage"),
    click.option("--labels-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="YAML/JSON labels options (built-in and model labellers; docs/labels.md), read at launch"),
    click.option("--privacy/--no-privacy", default=True, show_default=True, help="blur faces and licence plates before encoding"),
    click.option("--privacy-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="YAML/JSON privacy options (detectors, detect_every ...; docs/labels.md), read at launch"),
    click.option("--stage", multiple=True, help="further registered clip stages to run"),
    click.option("--post-workers", default=2, show_default=True, type=int,
                 help="threads per worker that label, blur and encode decoded clips while the next clip decodes (0: none)"),
    click.option("--opencv-threads", default=1, show_default=True, type=int,
                 help="OpenCV's own threads per worker process (1: the job's threads do the parallel work)"),
    click.option("--encode-threads", default=2, show_default=True, type=int, help="threads that JPEG-encode the frames of one clip"),
]
_CONFIG_KEYS = ("rate_hz", "max_side", "shard_bytes", "triggers", "labels", "labels_config", "privacy", "privacy_config", "stage",
                "post_workers", "opencv_threads", "encode_threads")


def config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The run config's options (one CurateConfig), shared by ``fleet curate`` and ``fleet relabel``."""
    for opt in reversed(_CONFIG_OPTIONS):
        f = opt(f)
    return f


def build_config(kw: dict[str, Any]) -> Any:
    """The CurateConfig of the config options in ``kw`` (popped from it; the option files are read now)."""
    from fleetcore.clips import CurateConfig, curate_stages
    from fleetcore.stages.options import LabelsOptions, PrivacyOptions

    o = {k: kw.pop(k) for k in _CONFIG_KEYS}
    return CurateConfig(
        rate_hz=o["rate_hz"],
        max_side=o["max_side"],
        shard_bytes=o["shard_bytes"],
        trigger_paths=o["triggers"],
        stages=curate_stages(labels=o["labels"], privacy=o["privacy"], extra=o["stage"]),
        privacy=PrivacyOptions.from_file(o["privacy_config"]) if o["privacy_config"] else PrivacyOptions(),
        labels=LabelsOptions.from_file(o["labels_config"]) if o["labels_config"] else LabelsOptions(),
        post_workers=o["post_workers"],
        opencv_threads=o["opencv_threads"],
        encode_threads=o["encode_threads"],
    )


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--input", "landing", required=True, help="landing zone root")
@click.option("--output", "store", required=True, help="clip store root")
@click.option("--vehicle", multiple=True, help="only these vehicles")
@click.option("--date", multiple=True, help="only drives of these UTC dates (YYYY-MM-DD)")
@config_options
@click.option("--json", "as_json", is_flag=True, help="print the run summary as JSON")
@click.pass_context
def curate(ctx: click.Context, landing, store, vehicle, date, as_json, **options) -> None:
    """Run the curate Beam job. Extra arguments are Beam pipeline options (e.g. --runner, --direct_running_mode).

    The options make one run config (fleetcore.clips.CurateConfig; the option files are read
    now), checked before the job starts."""
    from pipelines.curate import run_curate

    cfg = build_config(options)
    summary = run_curate(landing, store, cfg, beam_args=ctx.args, vehicles=list(vehicle) or None, dates=list(date) or None)
    if as_json:
        emit_json(summary)
    else:
        print_curate_summary(summary)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--store", required=True, help="clip store root")
@click.option("--vehicle", multiple=True, help="only these vehicles")
@click.option("--date", multiple=True, help="only drives of these UTC dates (YYYY-MM-DD)")
@config_options
@click.option("--json", "as_json", is_flag=True, help="print the run summary as JSON")
@click.pass_context
def relabel(ctx: click.Context, store, vehicle, date, as_json, **options) -> None:
    """Label the stored clips again with the given labels options, from their stored frames (no video
    decoded): a Beam job that writes new generations. Give the options the store was curated with,
    changing only the labels ones; drives whose stored frames or windows differ are skipped."""
    from pipelines.relabel import run_relabel

    summary = run_relabel(store, build_config(options), beam_args=ctx.args, vehicles=list(vehicle) or None, dates=list(date) or None)
    if as_json:
        emit_json(summary)
        return
    out.print(f"relabelled {summary['drives_relabelled']} drives ({summary['clips']} clips, {summary['frames_decoded']} video frames decoded)")
    for sk in summary["skipped"]:
        out.print(f"  skipped {sk['drive']} ({sk['config_version']}): {sk['reason']}", highlight=False)
    for q in summary["quarantined"]:
        out.print(f"  quarantined {q.get('vehicle_id')}/{q.get('drive_id')}/{q.get('clip_id')}: {q['code']}: {q['message']}", highlight=False)


def print_curate_summary(s: dict[str, Any]) -> None:
    t = Table(title=f"curate ({s['runner']}, {s['seconds']:.1f} s)", show_header=False)
    t.add_row("drives curated", str(s["drives_curated"]))
    t.add_row("clips", f"{s['clips']} ({s.get('clips_reused', 0)} re-keyed from stored frames, {s.get('clips_decoded', s['clips'])} decoded)")
    t.add_row("shards written", f"{s['shards_written']} ({s['bytes_written'] / 2**20:.1f} MiB)")
    t.add_row("clip store", f"{s['store_samples']} samples in {s['store_shards']} shards")
    t.add_row("quarantined", str(len(s["quarantined"])))
    out.print(t)
    for q in s["quarantined"]:
        out.print(f"  quarantined {q.get('vehicle_id')}/{q.get('drive_id')}{'/' + q['clip_id'] if q.get('clip_id') else ''}: {q['code']} ({q.get('file') or '-'}): {q['message']}", highlight=False)
    for drive, why in s.get("drives_without_clips", {}).items():
        out.print(f"  no clips from {drive}: {why}", highlight=False)


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------
@cli.command()
@click.option("--out", "out_dir", default="demo_out", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--vehicles", default=3, show_default=True)
@click.option("--drives", default=2, show_default=True)
@click.option("--cameras", default=3, show_default=True)
@click.option("--duration", default=30.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
def demo(out_dir: Path, vehicles: int, drives: int, cameras: int, duration: float, seed: int) -> None:
    """Simulate a fleet, validate it and curate it into a clip store (the main job end to end)."""
    from fleet_cli.demo import run_demo

    run_demo(out_dir, vehicles=vehicles, drives=drives, cameras=cameras, duration_s=duration, seed=seed,
             progress=progress_bar, show_landing=print_landing_summary, show_curate=print_curate_summary, console=out)


def _register(modules: list[str]) -> None:
    import importlib

    for name in modules:
        for cmd in importlib.import_module(name).COMMANDS:
            cli.add_command(cmd)


_register(["fleet_cli.mine", "fleet_cli.datasets", "fleet_cli.store", "fleet_cli.models", "fleet_cli.loop"])

if __name__ == "__main__":
    cli()
