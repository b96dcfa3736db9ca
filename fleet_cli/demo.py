"""`fleet demo` / `make demo`: simulate a fleet, validate it, curate it. Idempotent: a second run reuses
the simulated landing zone and the curate job skips drives it already curated."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from fleetcore.landing.drives import MANIFEST, UPLOAD_COMPLETE, list_drives

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
    from fleetcore.clips import CurateConfig
    from fleetcore.ingest.report import validate_landing
    from fleetcore.simulate import simulate_fleet
    from pipelines.curate import run_curate

    landing, store = out_dir / "landing", out_dir / "store"
    expected = vehicles * drives
    have = [r for r in list_drives(landing) if r.vehicle_id != BROKEN_VEHICLE] if landing.is_dir() else []
    if len(have) != expected:
        shutil.rmtree(landing, ignore_errors=True)
        console.print(f"[bold]1/5 simulate[/bold] {vehicles} vehicles x {drives} drives x {cameras} cameras x {duration_s:g} s -> {landing}")
        with progress("simulating drives") as step:
            simulate_fleet(landing, vehicles=vehicles, drives_per_vehicle=drives, cameras=cameras, duration_s=duration_s, seed=seed, progress=step)
    else:
        console.print(f"[bold]1/5 simulate[/bold] reusing {len(have)} simulated drives in {landing}")
    plant_broken_drive(landing)

    console.print("[bold]2/5 validate[/bold]")
    with progress("validating drives") as step:
        rep = validate_landing(landing, progress=step)
    show_landing(rep.summary())

    console.print(f"[bold]3/5 curate[/bold] (Beam local runner, FnApiRunner; labels and privacy on) -> {store}")
    summary = run_curate(str(landing), str(store), CurateConfig(), beam_args=["--runner=FnApiRunner", "--direct_running_mode=in_memory"])
    show_curate(summary)
    dataset = demo_dataset(store, out_dir / "datasets", console=console)
    mined = demo_mining(store, out_dir, console=console)
    return {"landing": rep.summary(), "curate": summary, "dataset": dataset, "mining": mined}


DEMO_SPEC = Path(__file__).resolve().parents[1] / "datasets" / "all_triggers.yaml"
DEMO_QUERY = (
    "SELECT clip_id, primary_trigger, time_of_day, manoeuvre, speed_band, round(speed_mean_mps * 3.6, 1) AS kmh "
    "FROM clips WHERE primary_trigger <> 'random_sample' ORDER BY peak_decel_mps2 DESC LIMIT 8"
)


def demo_dataset(store: Path, datasets_root: Path, *, console: Any) -> dict[str, Any]:
    """Build a small training dataset from a shipped spec, verify it, read it back with the loader."""
    from fleetcore.datasets.manifest import verify_dataset
    from fleetcore.datasets.loader import DatasetLoader
    from pipelines.build_dataset import run_build_dataset

    console.print(f"[bold]4/5 dataset[/bold] {DEMO_SPEC.name} -> {datasets_root}")
    res = run_build_dataset(DEMO_SPEC, store=str(store), datasets_root=str(datasets_root), beam_args=["--runner=FnApiRunner"])
    problems = verify_dataset(res.path)
    if problems:
        raise RuntimeError(f"dataset {res.path} failed verification: {problems[0]}")
    loader = DatasetLoader(res.path, seed=0)
    n, shape = 0, None
    for sample in loader:
        n += 1
        shape = tuple(sample["frames"].shape)
    loader.close()
    console.print(f"  {res.name} {res.version}: {res.samples} samples in {res.shards} shards "
                  f"({'built' if res.built else 'already built'}), verified; the loader read {n} samples, frames {shape}")
    console.print(f"  manifest: {res.manifest_path}")
    return {"name": res.name, "version": res.version, "samples": res.samples, "read_back": n, "manifest": res.manifest_path}


def demo_mining(store: Path, out_dir: Path, *, console: Any) -> dict[str, Any]:
    """A mining query over the catalog and its contact-sheet preview."""
    from rich.table import Table

    from fleetcore.query.mining import run_query
    from fleetcore.query.preview import contact_sheet

    console.print("[bold]5/5 mine[/bold] the hardest decelerations among triggered clips")
    df = run_query(store, DEMO_QUERY)
    t = Table()
    for c in df.columns:
        t.add_column(c)
    for row in df.iter_rows():
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)
    png = out_dir / "mining_preview.png"
    contact_sheet(store, df, png)
    console.print(f"  preview: {png}")
    return {"rows": df.height, "preview": str(png)}
