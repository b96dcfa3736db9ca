"""Validate a whole landing zone and summarise it (the CLI's `fleet validate` and the demo)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fleetcore.errors import DriveError, DriveIncomplete
from fleetcore.store.fs import file_size, join, read_bytes
from fleetcore.landing.drives import GROUND_TRUTH, list_drives
from fleetcore.ingest.validate import ValidatedDrive, quarantine_record, validate_drive

log = logging.getLogger(__name__)


@dataclass
class LandingReport:
    root: str
    valid: list[ValidatedDrive] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    ground_truth_events: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        cams = sorted({c.name for d in self.valid for c in d.cameras})
        return {
            "landing": self.root,
            "drives_total": len(self.valid) + len(self.quarantined) + len(self.incomplete),
            "drives_valid": len(self.valid),
            "drives_quarantined": len(self.quarantined),
            "drives_incomplete": len(self.incomplete),
            "vehicles": len({d.vehicle_id for d in self.valid}),
            "cameras": cams,
            "camera_files": sum(len(c.files) for d in self.valid for c in d.cameras),
            "video_hours": round(sum(d.video_seconds for d in self.valid) / 3600.0, 4),
            "video_frames": sum(c.frames for d in self.valid for c in d.cameras),
            "telemetry_rows": sum(d.telemetry_rows for d in self.valid),
            "ground_truth_events": dict(sorted(self.ground_truth_events.items())),
            "quarantine": [{"drive": f"{q['vehicle_id']}/{q['drive_id']}", "code": q["code"], "file": q["file"], "message": q["message"]} for q in self.quarantined],
            "incomplete": self.incomplete,
            "warnings": {f"{d.vehicle_id}/{d.drive_id}": d.warnings for d in self.valid if d.warnings},
        }


def validate_landing(root: str | Path, *, progress: Callable[[int, int], None] | None = None) -> LandingReport:
    """Validate every drive under ``root``; a bad drive is quarantined and never stops the others."""
    rep = LandingReport(str(root))
    refs = list_drives(root, include_incomplete=True)
    for i, ref in enumerate(refs):
        if not ref.complete:
            rep.incomplete.append(ref.key)
        else:
            try:
                rep.valid.append(validate_drive(ref.location))
            except DriveIncomplete:
                rep.incomplete.append(ref.key)
            except DriveError as exc:
                log.warning("quarantined %s: %s", ref.key, exc)
                rep.quarantined.append(quarantine_record(ref.location, exc, vehicle_id=ref.vehicle_id, drive_id=ref.drive_id))
            gt = join(ref.location, GROUND_TRUTH)
            if file_size(gt) is not None:
                for ev in json.loads(read_bytes(gt)).get("events", []):
                    rep.ground_truth_events[ev["type"]] += 1
        if progress:
            progress(i + 1, len(refs))
    return rep
