"""The clip store: WebDataset tar shards packed from per-clip fragments, plus a manifest.

Flow (the Beam job is distributed, so packing works from small staged pieces):

1. each worker encodes a clip (:func:`fleetcore.store.sample.encode_sample`) and writes it as a
   one-sample tar *fragment* with :func:`write_fragment` (``<staging>/<key>.tar``, atomic);
2. one step gathers the fragments and calls :func:`pack_shards`: fragments sorted by key,
   their member records (headers + data, without the end-of-archive blocks) stream-copied
   into shards of at most ``max_bytes`` (a sample is never split; an oversize sample gets
   a shard of its own);
3. :func:`write_store_manifest` writes ``manifest.json`` last, atomically;
   :func:`verify_store` re-checks a store against it.

Determinism: the same fragments give byte-identical shards, names and manifest. Shard
names are ``<prefix>-<token>-<NNNNNN>.tar`` where ``token`` (8 hex digits) is a hash of the
sorted keys, the fragment record sizes and ``max_bytes``, so all shards of one packing
share a brace-expandable pattern (``<prefix>-<token>-{000000..000009}.tar``) and a
different packing never reuses a name.

Resumability: temp files are ``.<name>.<token>.tmp`` (ignored by readers; removed when a write
fails, and by the next run when a killed run left them); a shard whose final file already has the
expected size and sha256 is not rewritten.

Paths (staging folder, fragments, store folder) are local paths or fsspec URIs
(``memory://``, ``s3://``, ...); local paths use the OS directly (``os.replace``, fsync).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Sequence

import pyarrow as pa

from fleetcore.errors import FleetError
from fleetcore.store.fs import (
    atomic_write_bytes,
    basename,
    file_size,
    is_local,
    join,
    makedirs,
    open_file,
    publish,
    remove as remove_file,
    sha256_file,
    unique_tmp,
)
from fleetcore.store.sample import (
    KEY_RE,
    DecodedSample,
    decode_sample,
    dumps_deterministic,
)
from fleetcore.store.tario import (
    MemberEntry,
    ShardError,
    TarScan,
    index_rows,
    read_member,
    scan_tar,
    split_member_name,
    tar_bytes,
    trailer_size,
)
from schemas import SHARD_INDEX

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
STORE_FORMAT = "fleet-clipstore"
STORE_FORMAT_VERSION = 2
PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_CHUNK = 1 << 20


class StoreError(FleetError):
    """A clip store (its folder or manifest) is unusable: names the path and the problem."""

    def __init__(self, path: str, problem: str, *, code: str = "store_invalid") -> None:
        self.path = str(path)
        super().__init__(self.path, problem, code=code)


@dataclass(frozen=True)
class Fragment:
    """A one-sample tar written by :func:`write_fragment`."""

    key: str
    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardInfo:
    """A packed shard. ``index`` holds its SHARD_INDEX rows (one per member, archive order);
    ``sample_sha256[i]`` is the sha256 of sample ``keys[i]``'s member records."""

    name: str
    path: str
    samples: int
    bytes: int
    sha256: str
    keys: tuple[str, ...]
    sample_sha256: tuple[str, ...]
    index: tuple[dict[str, Any], ...] = field(repr=False)

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "keys": list(self.keys),
            "sample_sha256": list(self.sample_sha256),
        }


@dataclass(frozen=True)
class Problem:
    """One thing :func:`verify_store` found wrong. ``shard`` is None for store-level problems."""

    shard: str | None
    code: str
    message: str
    member: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.shard or "store"
        if self.key is not None:
            where += f" sample {self.key!r}"
        if self.member is not None:
            where += f" member {self.member!r}"
        return f"{where}: {self.message} [{self.code}]"


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------
# fragments
# ----------------------------------------------------------------------------------------
def write_fragment(staging_dir: str | os.PathLike[str], key: str, members: Sequence[tuple[str, bytes]]) -> Fragment:
    """Write one sample's members as ``<staging_dir>/<key>.tar`` (atomically: temp + rename).

    Every member must be named ``<key>.<ext>``. Idempotent: the same members give the same
    file (a retried worker simply replaces it with identical bytes).
    """
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise StoreError(str(staging_dir), f"fragment key {key!r} is not valid ([A-Za-z0-9][A-Za-z0-9_-]*, no dots)", code="bad_key")
    if not members:
        raise StoreError(str(staging_dir), f"fragment {key!r} has no members", code="empty_fragment")
    for name, _ in members:
        split = split_member_name(name)
        if split is None or split[0] != key or "/" in name:
            raise StoreError(str(staging_dir), f"member {name!r} of fragment {key!r}: expected a name of the form {key}.<ext>", code="bad_member_name")
    data = tar_bytes(members)
    makedirs(staging_dir)
    path = join(staging_dir, f"{key}.tar")
    atomic_write_bytes(path, data)
    return Fragment(key=key, path=path, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class _Frag:
    key: str
    path: str
    records_end: int
    members: tuple[MemberEntry, ...]
    expected_sha256: str | None
    expected_bytes: int | None


def _load_fragment(item: Fragment | str | os.PathLike[str]) -> _Frag:
    path = item.path if isinstance(item, Fragment) else os.fspath(item)
    scan = scan_tar(path)
    if not scan.members:
        raise ShardError(path, "fragment has no members", code="fragment_invalid")
    keys = set()
    for m in scan.members:
        split = split_member_name(m.name)
        if split is None or "/" in m.name:
            raise ShardError(path, "expected a name of the form <key>.<ext>", member=m.name, code="fragment_invalid")
        keys.add(split[0])
    if len(keys) != 1:
        raise ShardError(path, f"a fragment holds one sample; found keys {sorted(keys)}", code="fragment_invalid")
    key = keys.pop()
    if basename(path) != f"{key}.tar":
        raise ShardError(path, f"fragment of sample {key!r} should be named {key}.tar", code="fragment_invalid")
    if isinstance(item, Fragment):
        if item.key != key:
            raise ShardError(path, f"Fragment.key is {item.key!r} but the members belong to {key!r}", code="fragment_invalid")
        if item.bytes != scan.file_size:
            raise ShardError(path, f"expected {item.bytes} bytes (as written), found {scan.file_size}", code="fragment_changed")
    return _Frag(
        key=key,
        path=path,
        records_end=scan.records_end,
        members=scan.members,
        expected_sha256=item.sha256 if isinstance(item, Fragment) else None,
        expected_bytes=item.bytes if isinstance(item, Fragment) else None,
    )


# ----------------------------------------------------------------------------------------
# packing
# ----------------------------------------------------------------------------------------
def _shard_size(records: int) -> int:
    return records + trailer_size(records)


def _partition(frags: Sequence[_Frag], max_bytes: int) -> list[list[_Frag]]:
    groups: list[list[_Frag]] = []
    cur: list[_Frag] = []
    cur_records = 0
    for fr in frags:
        if cur and _shard_size(cur_records + fr.records_end) > max_bytes:
            groups.append(cur)
            cur, cur_records = [], 0
        cur.append(fr)
        cur_records += fr.records_end
    if cur:
        groups.append(cur)
    return groups


def _stream_group(group: Sequence[_Frag], out: IO[bytes] | None) -> tuple[str, list[str], int]:
    """Stream the shard bytes of ``group`` into ``out`` (None: hash only).

    Returns (shard sha256, per-sample sha256, shard bytes). Verifies each Fragment's sha256.
    """
    shard_h = hashlib.sha256()
    sample_hashes: list[str] = []
    total = 0
    for fr in group:
        sample_h = hashlib.sha256()
        file_h = hashlib.sha256()
        with open_file(fr.path, "rb") as f:
            left = fr.records_end
            while left:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise ShardError(fr.path, f"fragment shrank while packing (expected {fr.records_end} bytes of records)", code="fragment_changed")
                left -= len(chunk)
                shard_h.update(chunk)
                sample_h.update(chunk)
                file_h.update(chunk)
                if out is not None:
                    out.write(chunk)
            if fr.expected_sha256 is not None:
                while chunk := f.read(_CHUNK):
                    file_h.update(chunk)
        if fr.expected_sha256 is not None and file_h.hexdigest() != fr.expected_sha256:
            raise ShardError(fr.path, f"fragment sha256 {file_h.hexdigest()} differs from the one recorded when written ({fr.expected_sha256})", code="fragment_changed")
        sample_hashes.append(sample_h.hexdigest())
        total += fr.records_end
    trailer = b"\0" * trailer_size(total)
    shard_h.update(trailer)
    if out is not None:
        out.write(trailer)
    return shard_h.hexdigest(), sample_hashes, total + len(trailer)


def packing_token(keys: Sequence[str], record_sizes: Sequence[int], max_bytes: int) -> str:
    """8 hex digits naming one packing (same fragments + max_bytes -> same token)."""
    doc = {"keys": list(keys), "max_bytes": int(max_bytes), "records": [int(s) for s in record_sizes], "v": 1}
    return hashlib.sha256(dumps_deterministic(doc)).hexdigest()[:8]


def pack_shards(
    fragments: Sequence[Fragment | str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    prefix: str,
    max_bytes: int = 256 * 2**20,
) -> list[ShardInfo]:
    """Pack fragments (sorted by key) into WebDataset shards in ``out_dir``; see the module docstring.

    Raises ShardError for a fragment that is not a valid one-sample tar (or changed since it
    was written), StoreError for repeated keys or bad options.
    """
    out = os.fspath(out_dir)
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
        raise StoreError(str(out), f"shard prefix {prefix!r} is not valid (letters, digits, _ . -)", code="bad_prefix")
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise StoreError(str(out), f"max_bytes must be a positive int, found {max_bytes!r}", code="bad_option")
    frags = sorted((_load_fragment(f) for f in fragments), key=lambda fr: fr.key)
    for a, b in zip(frags, frags[1:]):
        if a.key == b.key:
            raise StoreError(str(out), f"sample key {a.key!r} appears twice ({a.path}, {b.path})", code="duplicate_key")
    if not frags:
        return []
    makedirs(out)
    token = packing_token([f.key for f in frags], [f.records_end for f in frags], max_bytes)
    shards: list[ShardInfo] = []
    for i, group in enumerate(_partition(frags, max_bytes)):
        name = f"{prefix}-{token}-{i:06d}.tar"
        final = join(out, name)
        expected_bytes = _shard_size(sum(fr.records_end for fr in group))
        complete = False
        if file_size(final) == expected_bytes:  # left by an earlier run: keep it if it is exactly right
            sha, sample_hashes, nbytes = _stream_group(group, None)
            complete = sha256_file(final) == sha
            if complete:
                log.info("shard %s already complete; not rewritten", final)
        if not complete:
            tmp = unique_tmp(final)
            try:
                with open_file(tmp, "wb") as f:
                    sha, sample_hashes, nbytes = _stream_group(group, f)
                    if is_local(tmp):
                        f.flush()
                        os.fsync(f.fileno())
            except BaseException:
                if file_size(tmp) is not None:
                    remove_file(tmp)  # a partial shard (a full disk, a failing fragment) is never left behind
                raise
            publish(tmp, final)
            log.info("wrote shard %s (%d samples, %d bytes)", final, len(group), nbytes)
        rows: list[dict[str, Any]] = []
        base = 0
        for fr in group:
            rows.extend(index_rows(name, fr.members, base_offset=base, source=fr.path))
            base += fr.records_end
        shards.append(
            ShardInfo(
                name=name,
                path=final,
                samples=len(group),
                bytes=nbytes,
                sha256=sha,
                keys=tuple(fr.key for fr in group),
                sample_sha256=tuple(sample_hashes),
                index=tuple(rows),
            )
        )
    return shards


def shard_index_table(shards: Iterable[ShardInfo]) -> pa.Table:
    """All shards' member index as a validated SHARD_INDEX table."""
    rows = [row for s in shards for row in s.index]
    return SHARD_INDEX.validate(SHARD_INDEX.from_pylist(rows))


# ----------------------------------------------------------------------------------------
# manifest
# ----------------------------------------------------------------------------------------
def write_store_manifest(out_dir: str | os.PathLike[str], shards: Sequence[ShardInfo], *, extra: Mapping[str, Any]) -> Path | str:
    """Write ``<out_dir>/manifest.json`` (atomically; call it last). Deterministic JSON.

    Returns its Path (its URI string when ``out_dir`` is a URI).

    Shards are listed sorted by name. Each shard file must exist with its recorded size;
    names and sample keys must be unique across shards. ``extra`` (JSON-able) is stored
    under ``"extra"``.
    """
    out = os.fspath(out_dir)
    by_name: dict[str, ShardInfo] = {}
    seen_keys: dict[str, str] = {}
    for s in shards:
        if s.name in by_name:
            raise StoreError(str(out), f"shard {s.name!r} listed twice", code="duplicate_shard")
        by_name[s.name] = s
        p = join(out, s.name)
        size = file_size(p)
        if size is None:
            raise StoreError(p, "shard file is missing; expected it in the store folder before the manifest", code="missing_shard")
        if size != s.bytes:
            raise StoreError(p, f"expected {s.bytes} bytes, found {size}", code="size_mismatch")
        for k in s.keys:
            if k in seen_keys:
                raise StoreError(str(out), f"sample key {k!r} is in both {seen_keys[k]} and {s.name}", code="duplicate_key")
            seen_keys[k] = s.name
    entries = [by_name[n].manifest_entry() for n in sorted(by_name)]
    doc = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "extra": dict(extra),
        "n_shards": len(entries),
        "n_samples": sum(e["samples"] for e in entries),
        "total_bytes": sum(e["bytes"] for e in entries),
        "shards": entries,
    }
    try:
        data = (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")
    except (TypeError, ValueError) as exc:
        raise StoreError(join(out, MANIFEST_NAME), f"extra is not JSON-serialisable without NaN/inf ({exc})", code="bad_extra") from exc
    path = join(out, MANIFEST_NAME)
    atomic_write_bytes(path, data)
    return Path(path) if is_local(path) else path


def read_store_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``<out_dir>/manifest.json``. Raises StoreError (``manifest_missing`` / ``manifest_invalid``)."""
    path = join(out_dir, MANIFEST_NAME)
    if file_size(path) is None:
        raise StoreError(path, "store manifest is missing (the store is incomplete or not a clip store)", code="manifest_missing")
    try:
        with open_file(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(path, f"not valid JSON ({exc})", code="manifest_invalid") from exc
    if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
        raise StoreError(path, f"expected a JSON object with format {STORE_FORMAT!r}", code="manifest_invalid")
    if not isinstance(doc.get("format_version"), int) or doc["format_version"] > STORE_FORMAT_VERSION:
        raise StoreError(path, f"expected format_version <= {STORE_FORMAT_VERSION}, found {doc.get('format_version')!r}", code="manifest_invalid")
    shards = doc.get("shards")
    if not isinstance(shards, list):
        raise StoreError(path, "expected a list under 'shards'", code="manifest_invalid")
    for i, s in enumerate(shards):
        ok = (
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and _safe_relative_name(s["name"])
            and isinstance(s.get("samples"), int)
            and isinstance(s.get("bytes"), int)
            and isinstance(s.get("sha256"), str)
            and isinstance(s.get("keys"), list)
            and isinstance(s.get("sample_sha256"), list)
            and len(s["keys"]) == s["samples"] == len(s["sample_sha256"])
        )
        if not ok:
            raise StoreError(path, f"shards[{i}]: expected name, samples, bytes, sha256, keys, sample_sha256 (consistent)", code="manifest_invalid")
    return doc


def _safe_relative_name(name: str) -> bool:
    """A shard name is a relative path inside the store folder (e.g. ``date=2026-11-20/x.tar``):
    no absolute path, no ``..``, no hidden (temporary) component."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and "\\" not in name and all(p and p != ".." and not p.startswith(".") for p in parts)


def store_shard_paths(out_dir: str | os.PathLike[str]) -> list[str]:
    """Paths of the store's shards in manifest order (for ``webdataset.WebDataset``)."""
    doc = read_store_manifest(out_dir)
    return [join(out_dir, s["name"]) for s in doc["shards"]]


def check_shard_file(name: str, path: str, entry: Mapping[str, Any]) -> tuple[list[Problem], int | None, str | None]:
    """(problems, size, sha256) of shard ``path`` against its manifest ``entry``: missing, wrong
    size, wrong sha256. ``size`` is None when the file is missing."""
    size = file_size(path)
    if size is None:
        return [Problem(name, "missing_shard", f"shard file {path} is missing")], None, None
    problems: list[Problem] = []
    if size != entry["bytes"]:
        problems.append(Problem(name, "size_mismatch", f"expected {entry['bytes']} bytes, found {size} (truncated or overwritten)"))
    sha = sha256_file(path)
    if sha != entry["sha256"]:
        problems.append(Problem(name, "sha256_mismatch", f"expected sha256 {entry['sha256']}, found {sha}"))
    return problems, size, sha


def shard_samples(name: str, scan: TarScan) -> tuple[list[str], list[tuple[int, int]], Problem | None]:
    """Sample keys in archive order and each sample's byte range (first header .. next sample), or the
    problem that stops grouping the members (WebDataset needs each key's members contiguous)."""
    order: list[str] = []
    starts: list[int] = []
    for m in scan.members:
        split = split_member_name(m.name)
        if split is None:
            return order, [], Problem(name, "unsafe_member", "member name has no extension, so no WebDataset key", member=m.name)
        if not order or order[-1] != split[0]:
            if split[0] in order:
                return order, [], Problem(name, "key_not_contiguous", "members of this sample are not contiguous; WebDataset would split it",
                                          member=m.name, key=split[0])
            order.append(split[0])
            starts.append(m.header_offset)
    return order, list(zip(starts, starts[1:] + [scan.records_end])), None


def scan_shard_samples(name: str, path: str, entry: Mapping[str, Any]) -> tuple[TarScan | None, list[str], list[tuple[int, int]], list[Problem]]:
    """(tar scan, sample keys in order, their byte bounds, problems) of a shard the manifest lists as
    ``entry``: the scan is None when its tar headers do not read or its members do not group into
    samples; a ``keys_mismatch`` problem when the samples are not the manifest's keys."""
    try:
        scan = scan_tar(path)
    except ShardError as exc:
        return None, [], [], [Problem(name, exc.code or "tar_invalid", exc.problem, member=exc.member)]
    order, bounds, bad = shard_samples(name, scan)
    if bad is not None:
        return None, order, [], [bad]
    if order != list(entry["keys"]):
        return scan, order, bounds, [Problem(name, "keys_mismatch", f"expected samples {entry['keys']}, found {order}")]
    return scan, order, bounds, []


def _verify_shard(out: str, entry: Mapping[str, Any]) -> list[Problem]:
    name = entry["name"]
    path = join(out, name)
    problems, size, sha = check_shard_file(name, path, entry)
    if size is None:
        return problems
    scan, order, bounds, bad = scan_shard_samples(name, path, entry)
    if bad or scan is None:
        return problems + bad
    if sha != entry["sha256"]:
        with open_file(path, "rb") as f:
            for j, (k, (start, end)) in enumerate(zip(order, bounds)):
                f.seek(start)
                if hashlib.sha256(f.read(end - start)).hexdigest() != entry["sample_sha256"][j]:
                    members = [m.name for m in scan.members if start <= m.header_offset < end]
                    problems.append(
                        Problem(name, "sample_corrupt", f"sample bytes differ from the manifest (members {members[0]} .. {members[-1]})", key=k)
                    )
                    break
    return problems


def verify_store(out_dir: str | os.PathLike[str]) -> list[Problem]:
    """Re-hash every shard and re-check every member against the manifest.

    Returns the problems found (empty when the store is intact), in manifest order, so the
    first problem names the first bad shard (and, where it can be located, the sample key
    or member). Store-level problems (missing/invalid manifest) have ``shard=None``.
    """
    out = os.fspath(out_dir)
    try:
        doc = read_store_manifest(out)
    except StoreError as exc:
        return [Problem(None, exc.code, exc.problem)]
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for entry in doc["shards"]:
        for k in entry["keys"]:
            if k in seen:
                problems.append(Problem(entry["name"], "duplicate_key", f"sample key also in {seen[k]}", key=k))
            seen[k] = entry["name"]
        problems.extend(_verify_shard(out, entry))
    return problems


# ----------------------------------------------------------------------------------------
# random access
# ----------------------------------------------------------------------------------------
def read_sample(shard_path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> DecodedSample:
    """Decode one sample from its SHARD_INDEX rows (one sample's members) by random access."""
    members = {str(r["member"]): read_member(shard_path, int(r["data_offset"]), int(r["size"])) for r in rows}
    return decode_sample(members)
