"""Reading built datasets: resolve ``path`` or ``name@version``, read and check the manifest,
list versions, diff two versions and verify a version's shards."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fleetcore.datasets.build import (
    INDEX_NAME,
    MANIFEST_NAME,
    DatasetError,
    validate_manifest,
)
from fleetcore.store.fs import sha256_file
from fleetcore.store.tario import ShardError, iter_members
from schemas import SchemaValidationError


def resolve_dataset(ref: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> Path:
    """A dataset version folder from a path (the version folder or its manifest.json) or
    ``name@version`` / ``name@latest`` / ``name`` (latest) under ``root``."""
    s = os.fspath(ref)
    p = Path(s)
    if p.name == MANIFEST_NAME and p.is_file():
        return p.parent
    if (p / MANIFEST_NAME).is_file():
        return p
    if root is not None and "/" not in s:
        name, _, version = s.partition("@")
        base = Path(root, name)
        if not version or version == "latest":
            versions = list_versions(base)
            if not versions:
                raise DatasetError(str(base), "no built versions of this dataset", code="dataset_missing")
            return base / versions[-1]["version"]
        if (base / version / MANIFEST_NAME).is_file():
            return base / version
    raise DatasetError(s, "not a dataset: expected a version folder with manifest.json or name@version under the datasets root", code="dataset_missing")


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``<version folder>/manifest.json`` and check it against DATASET_MANIFEST."""
    mp = Path(path) / MANIFEST_NAME
    try:
        doc = json.loads(mp.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(str(mp), "manifest is missing (incomplete build?)", code="manifest_missing") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(str(mp), f"not valid JSON ({exc})", code="manifest_invalid") from exc
    try:
        validate_manifest(doc, path=str(mp))
    except (SchemaValidationError, pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise DatasetError(str(mp), f"does not match the dataset_manifest contract ({exc})", code="manifest_invalid") from exc
    for s in doc["shards"]:
        n = s["name"]
        if "/" in n or "\\" in n or n.startswith(".") or n in ("", ".."):
            raise DatasetError(str(mp), f"shard name {n!r} is not a plain file name", code="manifest_invalid")
    return doc


def list_versions(base: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Built versions of one dataset (``<root>/<name>``), oldest first (by manifest mtime, then name)."""
    b = Path(base)
    out = []
    if not b.is_dir():
        return out
    for d in b.iterdir():
        m = d / MANIFEST_NAME
        if d.is_dir() and not d.name.startswith(".") and m.is_file():
            doc = json.loads(m.read_text())
            out.append({"name": doc["name"], "version": doc["version"], "format": doc["format"], "samples": len(doc["samples"]),
                        "shards": len(doc["shards"]), "bytes": sum(s["bytes"] for s in doc["shards"]), "path": str(d), "_mtime": m.stat().st_mtime_ns})
    out.sort(key=lambda r: (r["_mtime"], r["version"]))
    for r in out:
        r.pop("_mtime")
    return out


def list_datasets(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    r = Path(root)
    if not r.is_dir():
        return []
    return [v for d in sorted(r.iterdir()) if d.is_dir() and not d.name.startswith(".") for v in list_versions(d)]


def diff_datasets(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Which clip_ids ``b`` adds to and removes from ``a`` (manifests), with counts."""
    ca = {s["clip_id"] for s in a["samples"]}
    cb = {s["clip_id"] for s in b["samples"]}
    added, removed = sorted(cb - ca), sorted(ca - cb)
    return {
        "a": f"{a['name']}@{a['version']}",
        "b": f"{b['name']}@{b['version']}",
        "added": added,
        "removed": removed,
        "n_added": len(added),
        "n_removed": len(removed),
        "n_common": len(ca & cb),
        "samples_a": len(a["samples"]),
        "samples_b": len(b["samples"]),
    }


# ----------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyProblem:
    shard: str | None
    member: str | None
    code: str
    message: str

    def __str__(self) -> str:
        where = self.shard or "dataset"
        if self.member is not None:
            where += f" member {self.member!r}"
        return f"{where}: {self.message} [{self.code}]"


def _load_index(path: Path, doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    ip = path / INDEX_NAME
    if not ip.is_file():
        raise DatasetError(str(ip), "index is missing", code="index_missing")
    want = doc.get("index", {}).get("sha256")
    if want and sha256_file(ip) != want:
        raise DatasetError(str(ip), "index sha256 differs from the manifest", code="index_corrupt")
    with pa.memory_map(str(ip), "r") as mm:
        rows = pa.ipc.open_file(mm).read_all().to_pylist()
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_shard.setdefault(r["shard"], []).append(r)
    return by_shard


def _check_member(name: str, data: bytes, shape_hw: tuple[int, int]) -> str | None:
    import simplejpeg

    if name.endswith(".jpg"):
        try:
            img = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError as exc:
            return f"JPEG does not decode ({exc})"
        if img.shape[:2] != shape_hw:
            return f"JPEG is {img.shape[1]}x{img.shape[0]}, expected {shape_hw[1]}x{shape_hw[0]}"
    elif name.endswith(".npy"):
        try:
            np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            return f".npy does not load ({exc})"
    elif name.endswith(".json"):
        try:
            json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"JSON does not parse ({exc})"
    return None


def _first_changed_record(path: Path, index: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first member whose tar record (header + data + padding) differs from the build."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        for r in sorted(index, key=lambda r: r["header_offset"]):
            end = r["data_offset"] + (r["size"] + 511) // 512 * 512
            if end > size:
                return r
            f.seek(r["header_offset"])
            if hashlib.sha256(f.read(end - r["header_offset"])).hexdigest() != r["record_sha256"]:
                return r
    return None


def _verify_tar(path: Path, entry: dict[str, Any], index: list[dict[str, Any]], doc: dict[str, Any], sha: str) -> list[VerifyProblem]:
    name = entry["name"]
    if sha != entry["sha256"]:
        changed = _first_changed_record(path, index)
        if changed is not None:
            return [VerifyProblem(name, changed["member"], "member_corrupt",
                                  "member record (header, data or padding) differs from the build or is cut off")]
    digests = {r["member"]: r["sha256"] for r in index}
    geo = doc["geometry"]
    hw = (int(geo["resolution"][1]), int(geo["resolution"][0]))
    problems: list[VerifyProblem] = []
    keys: list[str] = []
    try:
        for m in iter_members(path):
            key = m.name.split(".", 1)[0]
            if not keys or keys[-1] != key:
                keys.append(key)
            if m.name not in digests:
                problems.append(VerifyProblem(name, m.name, "unexpected_member", "member is not in the dataset index"))
                return problems
            if hashlib.sha256(m.data).hexdigest() != digests[m.name]:
                problems.append(VerifyProblem(name, m.name, "member_corrupt", "member bytes differ from the build (sha256 mismatch)"))
                return problems
            bad = _check_member(m.name, m.data, hw)
            if bad:
                problems.append(VerifyProblem(name, m.name, "member_undecodable", bad))
                return problems
    except ShardError as exc:
        member = exc.member
        if member is None:  # name the first indexed member that is not fully inside the file
            size = path.stat().st_size
            late = [r for r in index if r["data_offset"] + r["size"] > size]
            member = late[0]["member"] if late else None
        problems.append(VerifyProblem(name, member, exc.code, exc.problem))
        return problems
    if keys != list(entry["keys"]):
        problems.append(VerifyProblem(name, None, "keys_mismatch", f"expected samples {entry['keys']}, found {keys}"))
    return problems


def _verify_arrow(path: Path, entry: dict[str, Any], index: list[dict[str, Any]], doc: dict[str, Any], sha: str) -> list[VerifyProblem]:
    name = entry["name"]
    shape = list(doc["geometry"]["frames_shape"])
    size = path.stat().st_size
    try:
        mm = pa.memory_map(str(path), "r")
        reader = pa.ipc.open_file(mm)
    except (pa.ArrowInvalid, OSError) as exc:
        late = [r for r in index if r["data_offset"] + r["size"] > size]
        member = f"{late[0]['key']}/frames" if late else "footer"
        return [VerifyProblem(name, member, "arrow_unreadable", f"Arrow IPC file does not open ({exc})")]
    by_key = {r["key"]: r for r in index}
    keys: list[str] = []
    for b in range(reader.num_record_batches):
        try:
            batch = reader.get_batch(b)
            frames = batch.column("frames")
            if list(frames.type.shape) != shape:
                return [VerifyProblem(name, f"batch {b}/frames", "bad_shape", f"frames tensor shape {list(frames.type.shape)}, expected {shape}")]
            fr = frames.to_numpy_ndarray()
            tel = batch.column("telemetry").to_numpy_ndarray()
            bkeys = batch.column("key").to_pylist()
        except (pa.ArrowInvalid, KeyError, ValueError) as exc:
            return [VerifyProblem(name, f"batch {b}", "arrow_unreadable", f"record batch does not read ({exc})")]
        for i, key in enumerate(bkeys):
            keys.append(key)
            h = hashlib.sha256(fr[i].tobytes())
            h.update(np.ascontiguousarray(tel[i]).tobytes())
            if key not in by_key or h.hexdigest() != by_key[key]["sha256"]:
                return [VerifyProblem(name, f"{key}/frames", "member_corrupt", "sample tensors differ from the build (sha256 mismatch)")]
    if keys != list(entry["keys"]):
        return [VerifyProblem(name, None, "keys_mismatch", f"expected samples {entry['keys']}, found {keys}")]
    return []


def verify_dataset(path: str | os.PathLike[str]) -> list[VerifyProblem]:
    """Re-check every shard's size and sha256 and that every member decodes (JPEG, npy, JSON; Arrow
    file opens, tensors have the declared shape and the recorded digests). Problems in manifest order,
    so the first names the first bad shard and member. Empty list: intact."""
    p = Path(path)
    try:
        doc = read_manifest(p)
        index = _load_index(p, doc)
    except DatasetError as exc:
        return [VerifyProblem(None, None, exc.code, f"{exc.path}: {exc.problem}")]
    problems: list[VerifyProblem] = []
    for entry in doc["shards"]:
        sp = p / entry["name"]
        if not sp.is_file():
            problems.append(VerifyProblem(entry["name"], None, "missing_shard", f"{sp} is missing"))
            continue
        found: list[VerifyProblem] = []
        size = sp.stat().st_size
        sha = sha256_file(sp)
        check = _verify_tar if doc["format"] == "webdataset" else _verify_arrow
        detail = check(sp, entry, index.get(entry["name"], []), doc, sha)
        if size != entry["bytes"]:
            found.append(VerifyProblem(entry["name"], detail[0].member if detail else None, "size_mismatch",
                                       f"expected {entry['bytes']} bytes, found {size} (truncated or overwritten)"))
        if sha != entry["sha256"]:
            found.append(VerifyProblem(entry["name"], detail[0].member if detail else None, "sha256_mismatch",
                                       f"expected sha256 {entry['sha256']}, found {sha}"))
        found.extend(detail)
        problems.extend(found)
    return problems


def datasets_holding(root: str | os.PathLike[str], *, vehicle_id: str, drive_id: str | None = None) -> list[dict[str, Any]]:
    """Built dataset versions under ``root`` with samples from the vehicle (or one of its drives):
    name, version, path, ``samples_erased`` (how many) and the ``spec`` they were built from."""
    out = []
    for v in list_datasets(root):
        doc = read_manifest(v["path"])
        hits = [s for s in doc["samples"] if s["vehicle_id"] == vehicle_id and (drive_id is None or s["drive_id"] == drive_id)]
        if hits:
            out.append({"name": v["name"], "version": v["version"], "path": v["path"], "samples_erased": len(hits), "spec": doc["spec"]})
    return out
