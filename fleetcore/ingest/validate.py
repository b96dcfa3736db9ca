"""Validation of landing drives.

``validate_drive`` checks one drive folder and returns a :class:`ValidatedDrive`, or raises
:class:`~fleetcore.errors.DriveError` with a machine-readable ``code`` and the offending file,
or :class:`~fleetcore.errors.DriveIncomplete` when the upload-complete marker is absent
(such a drive is skipped until complete, never quarantined).

Checks, in order:
0. The drive folder (and its vehicle folder) is a real folder of the landing zone, not a symbolic
   link to somewhere else (``path_escape``).
1. ``manifest.json`` against the ``drive_manifest`` contract; every path stays inside the drive.
2. Every camera file exists, probes (resolution, frame rate, duration, frame count, keyframes)
   and is proved to decode: its first frames, and its last frames reached the way extraction
   will reach them (any codec the bundled FFmpeg decodes; see :mod:`fleetcore.video.probe`);
   a raw stream's frame-times file matches its frame count.
3. Telemetry parses into the canonical schema: exact duplicate rows are dropped (and counted);
   NaN, conflicting duplicate or out-of-order timestamps and out-of-range values are errors.
4. Camera and telemetry time ranges overlap.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fleetcore.errors import DriveError, DriveIncomplete, VideoError
from fleetcore.landing.drives import (
    MANIFEST,
    UPLOAD_COMPLETE,
    drive_date,
    drive_file,
    read_manifest,
)
from fleetcore.store.layout import sha256_hex
from fleetcore.store.fs import basename, file_size, is_dir, is_local, read_if_file, resolve, sha256_file
from fleetcore.timing import stage_time
from fleetcore.video.index import index_camera, read_drive_npy
from fleetcore.video.probe import PacketScan, VideoInfo, probe_with_scan
from schemas import FRAME_INDEX, QUARANTINE, TELEMETRY, SchemaValidationError

log = logging.getLogger(__name__)

#: A gap between telemetry samples longer than this is reported (not an error).
GAP_REPORT_S = 0.5


@dataclass
class CameraCheck:
    name: str
    files: list[str]
    infos: list[VideoInfo]
    start_ns: int
    end_ns: int
    frames: int

    @property
    def seconds(self) -> float:
        return sum(i.duration_s for i in self.infos)


@dataclass
class ValidatedDrive:
    path: str
    vehicle_id: str
    drive_id: str
    manifest: dict[str, Any]
    cameras: list[CameraCheck]
    frame_index: pa.Table  # FRAME_INDEX rows of every camera
    telemetry: pa.Table | None  # canonical TELEMETRY, or None for a video-only drive
    start_ns: int
    end_ns: int
    date: str
    source_digests: dict[str, str]
    telemetry_max_gap_s: float = 0.0
    telemetry_gaps: int = 0
    duplicates_dropped: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def video_seconds(self) -> float:
        return sum(c.seconds for c in self.cameras)

    @property
    def telemetry_rows(self) -> int:
        return 0 if self.telemetry is None else self.telemetry.num_rows

    def drive_index_row(self) -> dict[str, Any]:
        return {
            "vehicle_id": self.vehicle_id,
            "drive_id": self.drive_id,
            "date": self.date,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "utc_offset_ns": self.manifest["utc_offset_ns"],
            "cameras": [c.name for c in self.cameras],
            "video_seconds": self.video_seconds,
            "telemetry_rows": self.telemetry_rows,
            "telemetry_max_gap_s": self.telemetry_max_gap_s,
            "source": self.manifest.get("source"),
            "source_digests": sorted(self.source_digests.items()),
            "path": self.path,
        }


def quarantine_record(path: str, err: DriveError, *, stage: str = "validate", vehicle_id: str | None = None,
                      drive_id: str | None = None, clip_id: str | None = None) -> dict[str, Any]:
    """A QUARANTINE contract row for a drive (or clip) that failed."""
    row = {
        "vehicle_id": vehicle_id,
        "drive_id": drive_id,
        "clip_id": clip_id,
        "path": str(path),
        "stage": stage,
        "code": err.code,
        "file": err.file,
        "message": err.message,
    }
    QUARANTINE.validate(QUARANTINE.from_pylist([row]))
    return row


def _check_frame_times(d: str, cam: dict[str, Any], f: dict[str, Any], info: VideoInfo) -> str:
    """Check the camera file's frame-times array (one vehicle time per frame); returns the file's sha256."""
    ft_rel, rel = f["frame_times"], f["path"]
    try:
        got = read_drive_npy(d, ft_rel)
    except (ValueError, OSError, EOFError) as exc:
        raise DriveError(ft_rel, f"not a .npy array: {exc}", code="frame_times_invalid") from exc
    if got is None:
        raise DriveError(ft_rel, f"camera {cam['name']!r}: frame-times file does not exist", code="frame_times_missing")
    ft, digest = got
    if ft.ndim != 1 or len(ft) != info.frame_count:
        raise DriveError(ft_rel, f"expected a 1-D array of {info.frame_count} frame times (one per frame of {rel}), found shape {ft.shape}", code="frame_times_invalid")
    return digest


def _check_camera(d: str, cam: dict[str, Any], drive_id: str, digest_map: dict[str, str] | None) -> tuple[CameraCheck, pa.Table]:
    """Probe every file of one camera, check its frame times, index its frames; adds the files'
    sha256 to ``digest_map`` (when given), taken by the probe's pass over each file."""
    infos: list[VideoInfo] = []
    probes: list[tuple[VideoInfo, PacketScan]] = []
    rels: list[str] = []
    for f in cam["files"]:
        rel = f["path"]
        p = drive_file(d, rel)
        if file_size(p) is None:
            raise DriveError(rel, f"camera {cam['name']!r}: file listed in the manifest does not exist", code="camera_file_missing")
        try:
            info, scan = probe_with_scan(p)
        except VideoError as exc:
            raise DriveError(rel, f"camera {cam['name']!r}: {exc.message}", code=exc.code) from exc
        if f.get("frame_times") is not None:
            ft_digest = _check_frame_times(d, cam, f, info)
            if digest_map is not None:
                digest_map[f["frame_times"]] = ft_digest
        infos.append(info)
        assert scan is not None
        probes.append((info, scan))
        rels.append(rel)
        if digest_map is not None:
            digest_map[rel] = scan.sha256 or sha256_file(p)
    try:
        with stage_time("index"):
            idx = index_camera(d, cam, drive_id=drive_id, probes=probes)
    except VideoError as exc:
        raise DriveError(basename(exc.path or rels[0]), f"camera {cam['name']!r}: {exc.message}", code=exc.code) from exc
    if idx.num_rows == 0:
        raise DriveError(rels[0], f"camera {cam['name']!r} has no frames", code="video_no_frames")
    pts = idx.column("pts_ns")
    check = CameraCheck(name=cam["name"], files=rels, infos=infos, start_ns=int(pc.min(pts).as_py()), end_ns=int(pc.max(pts).as_py()),
                        frames=idx.num_rows)
    return check, idx


def _check_telemetry(d: str, ref: dict[str, Any], digest_map: dict[str, str] | None) -> tuple[pa.Table, int, float, int]:
    """(telemetry, duplicate rows dropped, longest gap in s, gaps over GAP_REPORT_S)."""
    rel = ref["path"]
    data = read_if_file(drive_file(d, rel))  # telemetry files are small: one read, then parsed and hashed from memory
    if data is None:
        raise DriveError(rel, "telemetry file listed in the manifest does not exist", code="telemetry_missing")
    telemetry, dups = read_telemetry(pa.BufferReader(data), fmt=ref["format"], rel=rel)
    if digest_map is not None:
        digest_map[rel] = sha256_hex(data)
    t = telemetry.column("t_ns").to_numpy()
    if len(t) < 2:
        raise DriveError(rel, f"expected at least 2 telemetry rows, found {len(t)}", code="telemetry_empty")
    gaps = np.diff(t) / 1e9
    return telemetry, dups, float(gaps.max()), int((gaps > GAP_REPORT_S).sum())


def _time_span(cameras: list[CameraCheck], telemetry: pa.Table | None, telemetry_rel: str | None) -> tuple[int, int]:
    """The drive's vehicle-time span; every camera must overlap the telemetry."""
    spans = [(c.start_ns, c.end_ns) for c in cameras]
    if telemetry is not None:
        t = telemetry.column("t_ns")
        t0, t1 = int(pc.min(t).as_py()), int(pc.max(t).as_py())
        for c in cameras:
            if c.end_ns < t0 or c.start_ns > t1:
                raise DriveError(telemetry_rel, f"telemetry covers vehicle time {t0 / 1e9:.3f}-{t1 / 1e9:.3f} s but camera {c.name!r} covers "
                    f"{c.start_ns / 1e9:.3f}-{c.end_ns / 1e9:.3f} s; expected overlapping time ranges", code="telemetry_no_overlap")
        spans.append((t0, t1))
    return min(s for s, _ in spans), max(e for _, e in spans)


def validate_drive(drive_dir: str | os.PathLike[str], *, digests: bool = True) -> ValidatedDrive:
    """Validate one landing drive folder (a local path, or a URI read in place by byte ranges:
    nothing is downloaded whole). See the module docstring."""
    d = os.fspath(drive_dir)
    d = d.rstrip("/") or d
    if is_local(d):
        d = resolve(d)[1]
        for folder in (Path(d), Path(d).parent):  # the drive folder or its vehicle folder linked in from elsewhere
            if folder.is_symlink():
                raise DriveError(None, f"{'drive' if str(folder) == d else 'vehicle'} folder {folder} is a symbolic link (to "
                                       f"{os.readlink(folder)!r}); links are not allowed", code="path_escape")
    if not is_dir(d):
        raise DriveError(None, f"drive folder {d} does not exist", code="drive_missing")
    if file_size(drive_file(d, UPLOAD_COMPLETE)) is None:
        raise DriveIncomplete(d, f"upload not complete ({UPLOAD_COMPLETE} missing); skipped until it is")
    m = read_manifest(d)
    drive_label = f"{m['vehicle_id']}/{m['drive_id']}"
    folder = d.rstrip("/").replace("\\", "/").split("/")[-2:]
    if folder != [m["vehicle_id"], m["drive_id"]]:
        raise DriveError(MANIFEST, f"manifest names {drive_label} but the folder is {'/'.join(folder)}", code="manifest_invalid")
    digest_map: dict[str, str] | None = {} if digests else None
    cameras: list[CameraCheck] = []
    index_parts: list[pa.Table] = []
    for cam in m["cameras"]:
        check, idx = _check_camera(d, cam, m["drive_id"], digest_map)
        cameras.append(check)
        index_parts.append(idx)
    frame_index = pa.concat_tables(index_parts) if index_parts else FRAME_INDEX.empty()
    telemetry, dups, max_gap, n_gaps = None, 0, 0.0, 0
    if m["telemetry"] is not None:
        telemetry, dups, max_gap, n_gaps = _check_telemetry(d, m["telemetry"], digest_map)
    elif not cameras:
        raise DriveError(MANIFEST, "the drive has neither cameras nor telemetry", code="drive_empty")
    start_ns, end_ns = _time_span(cameras, telemetry, m["telemetry"]["path"] if m["telemetry"] else None)
    vd = ValidatedDrive(
        path=d,
        vehicle_id=m["vehicle_id"],
        drive_id=m["drive_id"],
        manifest=m,
        cameras=cameras,
        frame_index=frame_index,
        telemetry=telemetry,
        start_ns=start_ns,
        end_ns=end_ns,
        date=drive_date(m, start_ns),
        source_digests=dict(sorted((digest_map or {}).items())),
        telemetry_max_gap_s=max_gap,
        telemetry_gaps=n_gaps,
        duplicates_dropped=dups,
    )
    vd.warnings.extend(drive_warnings(m, cameras, frame_index, start_ns, end_ns))
    if telemetry is not None:
        vd.warnings.extend(telemetry_warnings(telemetry, m["telemetry"]["path"]))
    if dups:
        vd.warnings.append(f"dropped {dups} exact duplicate telemetry rows")
    if n_gaps:
        vd.warnings.append(f"{n_gaps} telemetry gaps longer than {GAP_REPORT_S} s (longest {max_gap:.2f} s)")
    return vd


#: a camera covering less than this share of the drive's time span gets a warning
COVERAGE_WARN_SHARE = 0.5
#: a timestamp this much earlier than the one before it, in file order, is a clock going back
BACKWARDS_S = 0.5


def drive_warnings(m: dict[str, Any], cameras: list[CameraCheck], frame_index: pa.Table, start_ns: int, end_ns: int) -> list[str]:
    """What validation accepts but a user should hear about (``ValidatedDrive.warnings``: printed by
    ``fleet validate``, logged by the curate job): a declared codec that is not the file's, frames
    that share a timestamp or go back in time within a file, segment files that overlap in time, a
    camera that covers only part of the drive."""
    out: list[str] = []
    span = max(1, end_ns - start_ns)
    declared = {c["name"]: c.get("codec") for c in m["cameras"]}
    for c in cameras:
        for rel, info in zip(c.files, c.infos):
            want = declared.get(c.name)
            if want and info.codec and want != info.codec:
                out.append(f"camera {c.name!r}: {rel} is declared {want} but its stream is {info.codec}")
        rows = frame_index.filter(pc.equal(frame_index.column("camera"), c.name))
        files = rows.column("file_index").to_numpy()
        pts = rows.column("pts_ns").to_numpy()
        order = rows.column("frame_index").to_numpy()
        offsets = rows.column("byte_offset").to_numpy(zero_copy_only=False)
        bounds = []
        for fi in np.unique(files):
            sel = files == fi
            p = pts[sel][np.argsort(order[sel], kind="stable")]
            d = np.diff(p)
            rel = c.files[int(fi)] if int(fi) < len(c.files) else f"file {fi}"
            if (d == 0).any():
                out.append(f"camera {c.name!r}: {rel} has {int((d == 0).sum())} frames with the timestamp of the frame before")
            off = offsets[sel].astype(np.float64)
            if np.isfinite(off).all() and len(off) > 1:
                # in file (decode) order, B-frame reordering moves a timestamp back by a few frames;
                # a step back of more than BACKWARDS_S is a clock that went back
                back = np.diff(pts[sel][np.argsort(off, kind="stable")])
                n_back = int((back < -BACKWARDS_S * 1e9).sum())
                if n_back:
                    out.append(f"camera {c.name!r}: {rel} has timestamps going back in time by up to {-back.min() / 1e9:.2f} s "
                               f"({n_back} time(s), in file order)")
            if len(p):
                bounds.append((int(p.min()), int(p.max()), rel))
        for (a0, a1, ra), (b0, _b1, rb) in zip(bounds, bounds[1:]):
            if b0 <= a1:
                out.append(f"camera {c.name!r}: segment files {ra} and {rb} overlap by {(a1 - b0) / 1e9:.3f} s")
        covered = (c.end_ns - c.start_ns) / span
        if covered < COVERAGE_WARN_SHARE:
            out.append(f"camera {c.name!r} covers {(c.end_ns - c.start_ns) / 1e9:.1f} s of the drive's {span / 1e9:.1f} s "
                       "(clips outside it have no frames of this camera)")
    return out


#: telemetry_warnings: a speed change faster than this (1.5 g) or positions moving faster than
#: JUMP_MPS between two rows is not a car's
SPEED_JUMP_MPS2 = 15.0
JUMP_MPS = 120.0


def telemetry_warnings(telemetry: pa.Table, rel: str) -> list[str]:
    """Implausible jumps in the telemetry, with the time (s from its first row) and the signal:
    speed changing faster than SPEED_JUMP_MPS2, positions jumping faster than JUMP_MPS; a speed that
    is null on every row (a log without one)."""
    out: list[str] = []
    t = telemetry.column("t_ns").to_numpy().astype(np.int64)
    if len(t) < 2:
        return out
    dt = np.diff(t) / 1e9
    dt[dt <= 0] = np.nan

    def report(mask: np.ndarray, what: str) -> None:
        hits = np.flatnonzero(mask)
        if len(hits):
            i = int(hits[0])
            out.append(f"{rel}: {what} at {(t[i + 1] - t[0]) / 1e9:.2f} s" + (f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""))

    names = telemetry.column_names
    if "speed_mps" in names and telemetry.column("speed_mps").null_count == telemetry.num_rows:
        out.append(f"{rel}: speed_mps is null on every row (no speed in the log): speed triggers and labels see none")
    elif "speed_mps" in names:
        v = telemetry.column("speed_mps").to_numpy(zero_copy_only=False).astype(np.float64)
        rate = np.abs(np.diff(v)) / dt
        with np.errstate(invalid="ignore"):
            bad = rate > SPEED_JUMP_MPS2
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            report(bad, f"speed_mps jumps {v[i]:.1f} -> {v[i + 1]:.1f} m/s in {dt[i]:.2f} s")
    if "lat_deg" in names and "lon_deg" in names:
        lat = np.radians(telemetry.column("lat_deg").to_numpy(zero_copy_only=False).astype(np.float64))
        lon = np.radians(telemetry.column("lon_deg").to_numpy(zero_copy_only=False).astype(np.float64))
        ok = np.isfinite(lat) & np.isfinite(lon)
        idx = np.flatnonzero(ok)
        if len(idx) >= 2:
            a, b = idx[:-1], idx[1:]
            h = np.sin((lat[b] - lat[a]) / 2) ** 2 + np.cos(lat[a]) * np.cos(lat[b]) * np.sin((lon[b] - lon[a]) / 2) ** 2
            dist = 2 * 6_371_000.0 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))
            span = (t[b] - t[a]) / 1e9
            with np.errstate(divide="ignore", invalid="ignore"):
                bad = (dist / span > JUMP_MPS) & (dist > 200.0)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                out.append(f"{rel}: position jumps {dist[k] / 1000:.2f} km in {span[k]:.2f} s at {(t[b[k]] - t[0]) / 1e9:.2f} s"
                           + (f" (and {int(bad.sum()) - 1} more)" if bad.sum() > 1 else ""))
    return out


_CODE_BY_EXPECTED = (
    ("finite number", "telemetry_nan"),
    ("strictly increasing", "telemetry_unsorted"),
    ("a value >=", "telemetry_out_of_range"),
    ("a value <=", "telemetry_out_of_range"),
    ("one of", "telemetry_out_of_range"),
    ("non-null", "telemetry_null"),
)


def read_telemetry(path: Any, *, fmt: str, rel: str) -> tuple[pa.Table, int]:
    """Read a landing telemetry file into the canonical schema.

    Returns the table and the number of exact duplicate rows dropped. Raises DriveError.
    """
    try:
        if fmt == "parquet":
            raw = pq.read_table(path)
        else:
            raw = pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DriveError(rel, f"cannot read {fmt} telemetry: {exc}", code="telemetry_unreadable") from exc
    unknown = [c for c in raw.column_names if c not in TELEMETRY.column_names and not TELEMETRY.is_extra(c)]
    if unknown:
        raise DriveError(rel, f"unknown columns {unknown}; expected canonical columns {TELEMETRY.column_names} "
                         f"(plus extra columns named {TELEMETRY.extra_prefix}<name>)", code="telemetry_schema")
    try:
        TELEMETRY.validate_extras(raw)  # extra columns are checked here and left out of the canonical table
        table = TELEMETRY.conform(raw)
    except SchemaValidationError as exc:
        raise DriveError(rel, str(exc), code="telemetry_schema") from exc
    # Exact duplicate rows (a logger writing a record twice) are dropped and counted;
    # a timestamp repeated with other values is an error found by the contract check.
    t = table.column("t_ns").to_numpy()
    dups = 0
    if len(t) > 1:
        same_t = np.flatnonzero(t[1:] == t[:-1]) + 1
        if len(same_t):
            rows = table.to_pylist()
            drop = [i for i in same_t if _rows_equal(rows[i], rows[i - 1])]
            if drop:
                keep = np.ones(len(t), dtype=bool)
                keep[drop] = False
                table = table.filter(pa.array(keep))
                dups = len(drop)
    try:
        TELEMETRY.validate(table)
    except SchemaValidationError as exc:
        code = next((c for key, c in _CODE_BY_EXPECTED if key in exc.expected), "telemetry_invalid")
        if code == "telemetry_unsorted" and "duplicate" in exc.expected:
            code = "telemetry_duplicate_timestamp"
        raise DriveError(rel, str(exc), code=code) from exc
    return table, dups


def _rows_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, float) and isinstance(vb, float) and va != va and vb != vb:
            continue
        if va != vb:
            return False
    return True
