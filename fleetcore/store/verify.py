"""Integrity check of a clip store (``fleet store verify``): shards against the store manifest,
members decode, catalog rows against shard members.

For every generation the manifest lists (current and earlier ones, until ``fleet store gc``):

* each shard exists with the size and sha256 the manifest records, its tar headers read (not
  truncated, no unsafe member), its samples are the manifest's keys in order, each sample's bytes
  match its recorded sha256;
* every member of every sample decodes (JPEG / PNG frames, the JSON metadata, the telemetry
  ``.npy``), unless ``decode=False``;
* the generation's catalog files exist; its ``index`` rows are exactly the shards' members (one row
  per member, same key, header offset, data offset and size; none pointing past the end of its
  shard) and its ``clips`` rows are exactly its samples (count, member keys, shard of each).

Works on local stores and fsspec URIs (``s3://``...). Problems are returned in manifest order, one
:class:`~fleetcore.store.shards.Problem` each (``str(problem)`` is one line).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable

from fleetcore.store.fs import read_parquet, read_range
from fleetcore.store.layout import StoreLayout
from fleetcore.store.manifest import Generation, read_manifest
from fleetcore.store.sample import SampleError, decode_sample
from fleetcore.store.shards import Problem, StoreError, check_shard_file, scan_shard_samples
from fleetcore.store.tario import TarScan, split_member_name

__all__ = ["verify_clip_store", "verify_generation"]


def verify_clip_store(root: str | os.PathLike[str], *, decode: bool = True) -> list[Problem]:
    """Every problem of the store at ``root`` (empty: intact); see the module docstring."""
    layout = StoreLayout(os.fspath(root))
    try:
        man = read_manifest(layout)
    except StoreError as exc:
        return [Problem(None, exc.code or "manifest_invalid", f"{exc.where}: {exc.problem}")]
    if man.revision == 0:
        return [Problem(None, "manifest_missing", f"{layout.commits_dir}: no manifest revision (not a clip store, or nothing committed)")]
    problems: list[Problem] = []
    for g in man.all_generations():
        problems.extend(verify_generation(layout, g, decode=decode))
    return problems


def _catalog(layout: StoreLayout, g: Generation, table: str, columns: list[str], problems: list[Problem]) -> list[dict[str, Any]] | None:
    rel = g.table(table)
    if rel is None:
        if g.clips:
            problems.append(Problem(None, "catalog_missing", f"generation {g.drive} {g.config_version}: the manifest lists no {table!r} table"))
        return None
    try:
        return read_parquet(layout.resolve(rel), columns=columns).to_pylist()
    except (OSError, ValueError, KeyError) as exc:  # missing file, not Parquet, missing column
        problems.append(Problem(None, "catalog_unreadable", f"{rel}: catalog file does not read ({exc})"))
        return None


def verify_generation(layout: StoreLayout, g: Generation, *, decode: bool = True) -> list[Problem]:
    """The problems of one drive generation: its shards, members and catalog rows."""
    problems: list[Problem] = []
    index = _catalog(layout, g, "index", ["shard", "key", "member", "header_offset", "data_offset", "size"], problems)
    clips = _catalog(layout, g, "clips", ["clip_id", "shard", "member_key"], problems)
    shard_names = {s["name"] for s in g.shards}
    rows_by_shard: dict[str, list[dict[str, Any]]] = {}
    for r in index or ():
        if r["shard"] not in shard_names:
            problems.append(Problem(r["shard"], "catalog_unknown_shard", f"index row of member {r['member']!r}: shard is not in generation "
                                                                         f"{g.drive} {g.config_version}", member=r["member"], key=r["key"]))
            continue
        rows_by_shard.setdefault(r["shard"], []).append(r)
    key_shard: dict[str, str] = {}
    for entry in g.shards:
        for k in entry["keys"]:
            key_shard[k] = entry["name"]
        problems.extend(_verify_shard(layout, entry, rows_by_shard.get(entry["name"], []) if index is not None else None, decode=decode))
    if clips is not None:
        problems.extend(_check_clips(g, clips, key_shard))
    return problems


def _check_clips(g: Generation, clips: list[dict[str, Any]], key_shard: dict[str, str]) -> Iterable[Problem]:
    if len(clips) != g.clips:
        yield Problem(None, "catalog_count_mismatch", f"generation {g.drive} {g.config_version}: {len(clips)} clips rows, the manifest says {g.clips}")
    seen: set[str] = set()
    for c in clips:
        k = c["member_key"]
        if k in seen:
            yield Problem(c["shard"], "catalog_duplicate_key", f"clips row {c['clip_id']!r}: member key listed twice", key=k)
        seen.add(k)
        if k not in key_shard:
            yield Problem(c["shard"], "catalog_key_missing", f"clips row {c['clip_id']!r}: no sample of this key in the generation's shards", key=k)
        elif c["shard"] != key_shard[k]:
            yield Problem(c["shard"], "catalog_shard_mismatch", f"clips row {c['clip_id']!r}: the sample is in shard {key_shard[k]!r}", key=k)
    for k in sorted(set(key_shard) - seen):
        yield Problem(key_shard[k], "catalog_row_missing", "sample has no clips row", key=k)


def _verify_shard(layout: StoreLayout, entry: dict[str, Any], rows: list[dict[str, Any]] | None, *, decode: bool) -> list[Problem]:
    name = entry["name"]
    path = layout.shard_path(name)
    problems, size, sha = check_shard_file(name, path, entry)
    if size is None:
        return problems
    for r in rows or ():
        if r["data_offset"] + r["size"] > size or r["header_offset"] < 0:
            problems.append(Problem(name, "catalog_past_end", f"index row points at bytes {r['data_offset']}..{r['data_offset'] + r['size']}, "
                                                              f"the shard has {size}", member=r["member"], key=r["key"]))
    scan, order, bounds, bad = scan_shard_samples(name, path, entry)
    problems.extend(bad)
    if scan is None:
        return problems
    if rows is not None:
        problems.extend(_check_index(name, scan, rows))
    want = dict(zip(entry["keys"], entry["sample_sha256"]))
    if sha == entry["sha256"] and not decode:
        return problems
    for k, (start, end) in zip(order, bounds):
        data = read_range(path, start, end - start)
        if k in want and hashlib.sha256(data).hexdigest() != want[k]:
            problems.append(Problem(name, "sample_corrupt", "sample bytes differ from the manifest's sample_sha256", key=k))
        if decode:
            members = {m.name: data[m.data_offset - start: m.data_offset - start + m.size] for m in scan.members if start <= m.header_offset < end}
            try:
                decode_sample(members)
            except SampleError as exc:
                problems.append(Problem(name, "member_undecodable", exc.problem, member=exc.member, key=k))
            except (KeyError, TypeError, ValueError) as exc:  # metadata JSON parses but lacks what it should hold
                problems.append(Problem(name, "member_undecodable", f"metadata is incomplete ({exc!r})", member=f"{k}.json", key=k))
    return problems


def _check_index(name: str, scan: TarScan, rows: list[dict[str, Any]]) -> Iterable[Problem]:
    members = {m.name: m for m in scan.members}
    if len(rows) != len(members):
        yield Problem(name, "catalog_count_mismatch", f"{len(rows)} index rows for {len(members)} members")
    seen: set[str] = set()
    for r in rows:
        m = members.get(r["member"])
        seen.add(r["member"])
        if m is None:
            yield Problem(name, "catalog_member_missing", "index row names a member the shard does not hold", member=r["member"], key=r["key"])
            continue
        key = (split_member_name(m.name) or ("",))[0]
        got = (r["key"], r["header_offset"], r["data_offset"], r["size"])
        want = (key, m.header_offset, m.data_offset, m.size)
        if got != want:
            yield Problem(name, "catalog_offset_mismatch", f"index row (key, header, data, size) {got}, the shard has {want}", member=m.name, key=key)
    for n in sorted(set(members) - seen):
        yield Problem(name, "catalog_row_missing", "member has no index row", member=n)
