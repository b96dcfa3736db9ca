"""The similarity index: LanceDB tables beside the catalog, and ``--like`` searches (docs/loop.md).

:func:`build_index` embeds the store's current clips (:mod:`fleetcore.loop.embeddings`) into an
embedded LanceDB database at ``<store>/vectors/`` (``StoreLayout.vectors_dir``): table
``telemetry`` (one row per clip) and, with an image model, table ``image`` (one row per clip,
camera and time window). ``vectors/index.json`` records what was indexed (catalog snapshot, kinds,
dimensions, the model's sha256). A build replaces the tables of the kinds it builds.

:func:`like` finds the clips nearest (cosine distance) to a clip's vectors, optionally only among
``allowed`` clip ids, which :func:`like_query` takes from a mining query run through
:class:`~fleetcore.query.mining.MiningSession` (so ``--like X`` combines with any read-only SQL
over the store's tables, e.g. ``SELECT clip_id FROM clips WHERE time_of_day = 'night'``). The
allowed ids prefilter the vector search inside LanceDB. For the image kind every vector of the
query clip (each camera and window) is searched and a clip scores its best match, so one query
spans cameras.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Sequence

import polars as pl
import pyarrow as pa

from fleetcore.loop import LoopError
from fleetcore.loop.embeddings import TELEMETRY_EMBEDDING_VERSION, ImageModel, image_embeddings, telemetry_embeddings
from fleetcore.query.mining import MiningSession
from fleetcore.store.catalog import Catalog
from fleetcore.store.fs import atomic_write_bytes, file_size, join, read_bytes

log = logging.getLogger(__name__)

Kind = Literal["telemetry", "image"]
KINDS: Final = ("telemetry", "image")
META: Final = "index.json"


@dataclass
class IndexResult:
    path: str
    snapshot: str
    rows: dict[str, int]
    dims: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _connect(store: str) -> Any:
    import lancedb

    return lancedb.connect(Catalog(store).layout.vectors_dir)


def _table_names(db: Any) -> list[str]:
    names = db.list_tables() if hasattr(db, "list_tables") else db.table_names()
    names = getattr(names, "tables", names)
    return [str(n) for n in names]


def _arrow(df: pl.DataFrame, dim: int) -> pa.Table:
    t = df.to_arrow()
    vec = pa.FixedSizeListArray.from_arrays(pa.array(df.get_column("vector").explode().to_numpy(), pa.float32()), dim)
    return t.set_column(t.schema.get_field_index("vector"), "vector", vec)


def build_index(store: str | Path, *, image_model: ImageModel | None = None, kinds: Sequence[str] | None = None) -> IndexResult:
    """Embed the store's clips and (re)write the LanceDB tables; ``kinds`` default: telemetry, plus
    image when ``image_model`` is given."""
    store = str(store)
    cat = Catalog(store)
    if cat.manifest.revision == 0:
        raise LoopError(store, "the store has no committed clips yet (has the curate job run on it?)")
    want = list(kinds) if kinds is not None else (["telemetry"] + (["image"] if image_model is not None else []))
    bad = [k for k in want if k not in KINDS]
    if bad:
        raise LoopError(store, f"unknown embedding kind(s) {bad}; expected {list(KINDS)}")
    if "image" in want and image_model is None:
        raise LoopError(store, "the image embedding needs an ONNX model (image: path: ... in the loop config)")
    clips = cat.scan("clips").collect()
    db = _connect(store)
    rows: dict[str, int] = {}
    dims: dict[str, int] = {}
    for kind in want:
        df = telemetry_embeddings(cat, clips) if kind == "telemetry" else image_embeddings(cat, image_model, clips)  # type: ignore[arg-type]
        if df.is_empty():
            log.warning("%s: no %s embeddings (no clip has %s)", store, kind, "telemetry" if kind == "telemetry" else "frames")
            if kind in _table_names(db):
                db.drop_table(kind)
            rows[kind], dims[kind] = 0, 0
            continue
        dim = len(df.get_column("vector")[0])
        db.create_table(kind, _arrow(df, dim), mode="overwrite")
        rows[kind], dims[kind] = df.height, dim
    old = index_info(store) or {}
    image_meta = old.get("image_model") if "image" not in want else {
        "path": image_model.path, "sha256": image_model.sha256, "input_size": list(image_model.input_size),  # type: ignore[union-attr]
        "window_s": image_model.window_s}  # type: ignore[union-attr]
    kept = [k for k in old.get("kinds", []) if k not in want and k in _table_names(db)]
    meta = {"snapshot": cat.snapshot_id(), "kinds": sorted({*want, *kept}),
            "rows": {**{k: old["rows"][k] for k in kept}, **rows}, "dims": {**{k: old["dims"][k] for k in kept}, **dims},
            "telemetry_embedding": TELEMETRY_EMBEDDING_VERSION, "image_model": image_meta}
    path = join(cat.layout.vectors_dir, META)
    atomic_write_bytes(path, json.dumps(meta, indent=1, sort_keys=True).encode())
    log.info("%s: indexed %s", store, rows)
    return IndexResult(cat.layout.vectors_dir, meta["snapshot"], rows, dims)


def index_info(store: str | Path) -> dict[str, Any] | None:
    """``vectors/index.json`` of a store (None: never indexed)."""
    p = join(Catalog(str(store)).layout.vectors_dir, META)
    if file_size(p) is None:
        return None
    return json.loads(read_bytes(p))


def _quote(ids: Sequence[str]) -> str:
    return ", ".join("'" + str(i).replace("'", "''") + "'" for i in ids)


def like(store: str | Path, clip_id: str, *, k: int = 50, kind: str = "telemetry", allowed: Sequence[str] | None = None,
         camera: str | None = None) -> pl.DataFrame:
    """The ``k`` clips nearest to ``clip_id`` (itself excluded): rank, clip_id, distance (cosine), and
    for the image kind the camera and window of the best match (``camera`` limits the query
    clip's vectors to that camera)."""
    store = str(store)
    if kind not in KINDS:
        raise LoopError("--embedding", f"unknown embedding kind {kind!r}; expected {list(KINDS)}")
    if k < 1:
        raise LoopError("--k", f"must be >= 1, got {k}")
    db = _connect(store)
    missing = LoopError(Catalog(store).layout.vectors_dir, f"no {kind} index yet: run `fleet index build --store {store}`"
                        + (" --config LOOP.yaml (with an image model)" if kind == "image" else ""))
    if kind not in _table_names(db):
        raise missing
    try:
        tbl = db.open_table(kind)
    except (ValueError, OSError) as exc:  # a table folder without its data (e.g. after an erasure)
        raise missing from exc
    q = f"clip_id = {_quote([clip_id])}" + (f" AND camera = {_quote([camera])}" if camera and kind == "image" else "")
    mine = tbl.search().where(q).limit(10_000).to_arrow()
    if mine.num_rows == 0:
        raise LoopError(f"--like {clip_id}", f"clip not in the {kind} index" + (f" for camera {camera!r}" if camera else "")
                        + " (unknown clip, no telemetry / frames, or indexed before it was curated: rebuild the index)")
    schema = {"rank": pl.Int32, "clip_id": pl.String, "distance": pl.Float64, **({"camera": pl.String, "window": pl.Int32} if kind == "image" else {})}
    if allowed is not None:
        ids = sorted({str(a) for a in allowed} - {clip_id})
        if not ids:
            return pl.DataFrame(schema=schema)
        flt = f"clip_id IN ({_quote(ids)})"
    else:
        flt = f"clip_id <> {_quote([clip_id])}"
    per_vec = max(k, 1) * (8 if kind == "image" else 1) + 1
    best: dict[str, tuple[float, str | None, int | None]] = {}
    for vec in mine.column("vector").to_pylist():
        hits = tbl.search(vec).metric("cosine").where(flt, prefilter=True).limit(per_vec).to_arrow()
        cols = hits.to_pydict()
        for i, cid in enumerate(cols["clip_id"]):
            d = float(cols["_distance"][i])
            cam = cols["camera"][i] if kind == "image" else None
            win = cols["window"][i] if kind == "image" else None
            if cid not in best or d < best[cid][0]:
                best[cid] = (d, cam, win)
    ranked = sorted(best.items(), key=lambda kv: (kv[1][0], kv[0]))[:k]
    data: dict[str, list[Any]] = {"rank": list(range(1, len(ranked) + 1)), "clip_id": [c for c, _ in ranked],
                                  "distance": [v[0] for _, v in ranked]}
    if kind == "image":
        data["camera"] = [v[1] for _, v in ranked]
        data["window"] = [v[2] for _, v in ranked]
    return pl.DataFrame(data, schema=schema)


def like_query(session: MiningSession, clip_id: str, query: str | None = None, *, k: int = 50, kind: str = "telemetry",
               camera: str | None = None) -> pl.DataFrame:
    """:func:`like` among the clips a mining query selects (its ``clip_id`` column), the query's rows
    joined to the matches, nearest first. No query: all clips (``SELECT * FROM clips``)."""
    sql = query or "SELECT * FROM clips"
    rows = session.query(sql)
    if "clip_id" not in rows.columns:
        raise LoopError("--like", "the query must select a clip_id column to combine with --like")
    found = like(session.store, clip_id, k=k, kind=kind, allowed=rows.get_column("clip_id").cast(pl.String).to_list(), camera=camera)
    extra = rows.unique("clip_id", keep="first", maintain_order=True)
    dup = [c for c in extra.columns if c in found.columns and c != "clip_id"]
    return found.join(extra.drop(dup), on="clip_id", how="left").sort("rank")
