"""`fleet demo` / `make demo`: simulate a fleet, validate it, curate it. Idempotent: a second run reuses
the simulated landing zone and the curate job skips drives it already curated."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from fleetcore.landing import MANIFEST, UPLOAD_COMPLETE, list_drives

log = logging.getLogger(__name__)

BROKEN_VEHICLE = "veh-broken"


def plant_broken_drive(landing: Path) -> Path:
    """Copy one simulated drive as a broken upload (its front video cut in half), so the demo shows
    a drive being quarantined with its reason while the others go on."""
    good = next(r for r in list_drives(landing) if r.vehicle_id != BROKEN_VEHICLE)
    dst = landing / BROKEN_VEHICLE / f"{good.drive_id}-cut"
    if (dst / UPLOAD_COMPLETE).exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(good.path, dst)
    m = json.loads((dst / MANIFEST).read_text())
    m["vehicle_id"], m["drive_id"] = BROKEN_VEHICLE, dst.name
    (dst / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True))
    video = dst / m["cameras"][0]["files"][0]["path"]
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    (dst / "ground_truth.json").unlink(missing_ok=True)
    return dst


def run_demo(out_dir: Path, *, vehicles: int, drives: int, cameras: int, duration_s: float, seed: int,
             progress: Callable[..., Any], show_landing: Callable[[dict], None], show_curate: Callable[[dict], None],
             console: Any) -> dict[str, Any]:
    from fleetcore.report import validate_landing
    from fleetcore.simulate import simulate_fleet
    from pipelines.curate import build_parser, config_from_args, run_curate

    landing, store = out_dir / "landing", out_dir / "store"
    expected = vehicles * drives
    have = [r for r in list_drives(landing) if r.vehicle_id != BROKEN_VEHICLE] if landing.is_dir() else []
    if len(have) != expected:
        shutil.rmtree(landing, ignore_errors=True)
        console.print(f"[bold]1/3 simulate[/bold] {vehicles} vehicles x {drives} drives x {cameras} cameras x {duration_s:g} s -> {landing}")
        with progress("simulating drives") as step:
            simulate_fleet(landing, vehicles=vehicles, drives_per_vehicle=drives, cameras=cameras, duration_s=duration_s, seed=seed, progress=step)
    else:
        console.print(f"[bold]1/3 simulate[/bold] reusing {len(have)} simulated drives in {landing}")
    plant_broken_drive(landing)

    console.print("[bold]2/3 validate[/bold]")
    with progress("validating drives") as step:
        rep = validate_landing(landing, progress=step)
    show_landing(rep.summary())

    console.print(f"[bold]3/3 curate[/bold] (Beam local runner, FnApiRunner) -> {store}")
    cfg = config_from_args(build_parser().parse_args(["--input", str(landing), "--output", str(store)]))
    summary = run_curate(str(landing), str(store), cfg, beam_args=["--runner=FnApiRunner", "--direct_running_mode=in_memory"])
    show_curate(summary)
    return {"landing": rep.summary(), "curate": summary}
