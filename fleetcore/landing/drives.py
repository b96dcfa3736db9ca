"""The landing zone: one folder per drive, ``<root>/<vehicle_id>/<drive_id>/``.

See ``docs/landing-format.md``. Writers (simulator, importers) use :class:`DriveWriter`,
which writes every file atomically and the upload-complete marker last. Readers use
:func:`list_drives` and :func:`read_manifest`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from fleetcore.errors import DriveError
from fleetcore.store.fs import (
    exists,
    is_dir,
    is_local,
    join,
    list_dir,
    read_if_file,
    resolve,
)
from schemas import DRIVE_MANIFEST, TELEMETRY, SchemaValidationError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
UPLOAD_COMPLETE = "_UPLOAD_COMPLETE"
GROUND_TRUTH = "ground_truth.json"
FORMAT_VERSION = 1
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
CAMERA_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")


@dataclass(frozen=True)
class DriveRef:
    """A drive folder in the landing zone."""

    root: str
    vehicle_id: str
    drive_id: str
    complete: bool

    @property
    def path(self) -> Path:
        """The drive folder as a local Path (for a local landing zone)."""
        return Path(self.root) / self.vehicle_id / self.drive_id

    @property
    def location(self) -> str:
        """The drive folder as a local path or URI (``s3://bucket/landing/veh/drive``)."""
        return join(join(self.root, self.vehicle_id), self.drive_id)

    @property
    def key(self) -> str:
        return f"{self.vehicle_id}/{self.drive_id}"


def list_drives(
    root: str | os.PathLike[str],
    *,
    vehicles: list[str] | None = None,
    include_incomplete: bool = False,
) -> list[DriveRef]:
    """All drive folders under ``root`` (sorted), complete ones only unless asked.

    A drive folder is any ``<vehicle>/<drive>/`` directory; completeness is the presence
    of the upload-complete marker.
    """
    if not is_local(root):
        return _list_remote_drives(os.fspath(root), vehicles=vehicles, include_incomplete=include_incomplete)
    rootp = Path(root)
    if not rootp.is_dir():
        raise FileNotFoundError(f"{root}: landing root is not a directory")
    out: list[DriveRef] = []
    for vdir in sorted(p for p in rootp.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if vehicles and vdir.name not in vehicles:
            continue
        for ddir in sorted(p for p in vdir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            complete = (ddir / UPLOAD_COMPLETE).is_file()
            if complete or include_incomplete:
                out.append(DriveRef(str(rootp), vdir.name, ddir.name, complete))
    return out


def _list_remote_drives(root: str, *, vehicles: list[str] | None, include_incomplete: bool) -> list[DriveRef]:
    if not is_dir(root):
        raise FileNotFoundError(f"{root}: landing root is not a directory")
    out: list[DriveRef] = []
    for v in list_dir(root):
        if v.startswith((".", "_")) or (vehicles and v not in vehicles) or not is_dir(join(root, v)):
            continue
        for d in list_dir(join(root, v)):
            loc = join(join(root, v), d)
            if d.startswith((".", "_")) or not is_dir(loc):
                continue
            complete = exists(join(loc, UPLOAD_COMPLETE))
            if complete or include_incomplete:
                out.append(DriveRef(root, v, d, complete))
    return out


def resolve_in_drive(drive_dir: str | os.PathLike[str], rel: str) -> Path:
    """Resolve a manifest path inside the drive folder, refusing escapes.

    Raises DriveError(code="path_escape") for absolute paths, ``..`` components and symlinks
    that lead outside the drive folder.
    """
    base = Path(drive_dir).resolve()
    _check_relative(rel)
    full = base / rel
    # Refuse any symlink on the way (a link inside the drive could still point out of it later).
    cur = base
    for part in Path(rel).parts:
        cur = cur / part
        if cur.is_symlink():
            target = os.readlink(cur)
            raise DriveError(rel, f"path {rel!r} is a symbolic link (to {target!r}); links are not allowed", code="path_escape")
    resolved = full.resolve()
    if base != resolved and base not in resolved.parents:
        raise DriveError(rel, f"path {rel!r} resolves outside the drive folder", code="path_escape")
    return full


def _check_relative(rel: Any) -> None:
    """A manifest path must be a non-empty relative path without ``..`` (DriveError path_escape)."""
    if not isinstance(rel, str) or not rel:
        raise DriveError(MANIFEST, f"expected a non-empty relative path, found {rel!r}", code="manifest_invalid")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise DriveError(rel, f"path {rel!r} is absolute; expected a path inside the drive folder", code="path_escape")
    if ".." in Path(rel).parts or ".." in rel.split("/"):
        raise DriveError(rel, f"path {rel!r} contains '..'; expected a path inside the drive folder", code="path_escape")


def drive_file(drive: str | os.PathLike[str], rel: str) -> str:
    """A manifest path inside the drive folder as a local path or URI: :func:`resolve_in_drive` for a
    local drive (links refused); inside an object-store drive (which has no links) the same
    checks of the relative path, then ``drive/rel``."""
    if is_local(drive):
        return str(resolve_in_drive(resolve(drive)[1], rel))
    _check_relative(rel)
    return join(drive, rel)


def read_manifest(drive_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``manifest.json`` against the DRIVE_MANIFEST contract.

    Raises DriveError with code ``manifest_missing`` / ``manifest_invalid``.
    """
    data = read_if_file(join(drive_dir, MANIFEST))
    if data is None:
        raise DriveError(MANIFEST, "manifest.json is missing", code="manifest_missing")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DriveError(MANIFEST, f"not valid JSON: {exc}", code="manifest_invalid") from exc
    return validate_manifest(raw)


def validate_manifest(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DriveError(MANIFEST, f"expected a JSON object, found {type(raw).__name__}", code="manifest_invalid")
    unknown = set(raw) - set(DRIVE_MANIFEST.column_names)
    if unknown:
        raise DriveError(MANIFEST, f"unknown keys {sorted(unknown)}; expected only {DRIVE_MANIFEST.column_names}", code="manifest_invalid")
    try:
        table = DRIVE_MANIFEST.from_pylist([raw])
        DRIVE_MANIFEST.validate(table)
    except SchemaValidationError as exc:
        raise DriveError(MANIFEST, str(exc), code="manifest_invalid") from exc
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, KeyError, OverflowError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DriveError(MANIFEST, f"does not match the drive_manifest contract v1: {first}", code="manifest_invalid") from exc
    m = table.to_pylist()[0]
    for key in ("vehicle_id", "drive_id"):
        if not ID_RE.match(m[key]):
            raise DriveError(MANIFEST, f"{key} {m[key]!r} is not a valid id (letters, digits, _ . -)", code="manifest_invalid")
    names = [c["name"] for c in m["cameras"]]
    if len(set(names)) != len(names):
        raise DriveError(MANIFEST, f"camera names repeat: {names}", code="manifest_invalid")
    for c in m["cameras"]:
        if not CAMERA_RE.match(c["name"]):
            raise DriveError(MANIFEST, f"camera name {c['name']!r} is not valid (lowercase letters, digits, _ -)", code="manifest_invalid")
        if not c["files"]:
            raise DriveError(MANIFEST, f"camera {c['name']!r} lists no files", code="manifest_invalid")
        for f in c["files"]:
            if f["start_ns"] is None and f["frame_times"] is None:
                raise DriveError(MANIFEST, f"camera {c['name']!r} file {f['path']!r}: expected start_ns (container video) or frame_times (raw stream)", code="manifest_invalid")
    if m["telemetry"] is not None and m["telemetry"]["format"] not in ("parquet", "csv"):
        raise DriveError(MANIFEST, f"telemetry.format {m['telemetry']['format']!r}: expected 'parquet' or 'csv'", code="manifest_invalid")
    return m


def drive_date(manifest: dict[str, Any], start_ns: int) -> str:
    """UTC date (YYYY-MM-DD) of a vehicle-clock time in this drive."""
    utc = dt.datetime.fromtimestamp((start_ns + manifest["utc_offset_ns"]) / 1e9, tz=dt.timezone.utc)
    return utc.strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dumps_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, two-space indent, trailing newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_telemetry_parquet(path: str | os.PathLike[str], table: pa.Table) -> None:
    """Write canonical telemetry (conformed and validated, extra ``x_*`` columns kept) atomically and deterministically."""
    table = TELEMETRY.validate(TELEMETRY.conform(table, extras=True))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class DriveWriter:
    """Writes one landing drive. Files go in first; ``finish`` writes the manifest, then the marker.

    >>> w = DriveWriter(root, "veh-001", "veh-001_20261120T080000Z")
    >>> w.path / "cameras"  # write camera files here (use w.tmp_path(rel) + os.replace, or atomic_write_bytes)
    >>> w.write_telemetry(table)  # canonical telemetry -> telemetry.parquet
    >>> w.finish(manifest_dict)    # validated; writes manifest.json then _UPLOAD_COMPLETE
    """

    def __init__(self, root: str | os.PathLike[str], vehicle_id: str, drive_id: str, *, overwrite: bool = False) -> None:
        for what, v in (("vehicle_id", vehicle_id), ("drive_id", drive_id)):
            if not ID_RE.match(v):
                raise ValueError(f"{what} {v!r} is not a valid id (letters, digits, _ . -)")
        self.vehicle_id = vehicle_id
        self.drive_id = drive_id
        self.path = Path(root) / vehicle_id / drive_id
        if (self.path / UPLOAD_COMPLETE).exists() and not overwrite:
            raise FileExistsError(f"{self.path}: drive already landed (upload-complete marker present)")
        if overwrite and (self.path / UPLOAD_COMPLETE).exists():
            (self.path / UPLOAD_COMPLETE).unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, rel: str) -> Path:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_bytes(self, rel: str, data: bytes) -> Path:
        p = self.file(rel)
        atomic_write_bytes(p, data)
        return p

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write_bytes(rel, dumps_json(obj))

    def write_telemetry(self, table: pa.Table, rel: str = "telemetry.parquet") -> Path:
        p = self.file(rel)
        write_telemetry_parquet(p, table)
        return p

    def finish(self, manifest: dict[str, Any]) -> Path:
        m = dict(manifest)
        m.setdefault("format_version", FORMAT_VERSION)
        m.setdefault("vehicle_id", self.vehicle_id)
        m.setdefault("drive_id", self.drive_id)
        validate_manifest(m)
        for cam in m["cameras"]:
            for f in cam["files"]:
                resolve_in_drive(self.path, f["path"])
        self.write_json(MANIFEST, m)
        atomic_write_bytes(self.path / UPLOAD_COMPLETE, b"")
        return self.path


def iter_files(drive_dir: str | os.PathLike[str]) -> Iterator[Path]:
    for p in sorted(Path(drive_dir).rglob("*")):
        if p.is_file():
            yield p
