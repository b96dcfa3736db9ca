"""Dataset specs: a YAML file naming what to select from a clip store and how to shape it.

Example (see ``datasets/*.yaml``)::

    name: braking_front
    description: hard braking at night, front camera
    store: /data/store            # clip store root (the command line may override it)
    where: "primary_trigger = 'hard_brake' AND time_of_day = 'night'"   # or  sql: "SELECT * FROM clips WHERE ..."
    cap_per_trigger: 1000
    cap_per_vehicle: 200
    class_weights: {hard_brake: 1.0, random_sample: 0.25}
    val_fraction: 0.1
    cameras: [front]
    frames_per_clip: 8
    frame_rate_hz: 5.0
    resolution: [224, 128]        # [W, H]
    format: webdataset            # or arrow
    shard_bytes: 268435456
    seed: 0
    drop_near_duplicates: true
    privacy_required: true
    limits: {time_limit_s: 120}   # optional bounds on the where/sql query (fleetcore.queryguard.QueryLimits)

The ``where`` / ``sql`` query is checked when the spec is read (read-only over ``clips``, within
the limits: :func:`fleetcore.queryguard.check_sql`). ``limits`` overrides the bounds of
:data:`DATASET_LIMITS` (``max_chars``, ``max_nesting``, ``max_terms``, ``max_joins``,
``max_rows``, ``time_limit_s``); given limits are part of the spec's identity.

Every problem raises :class:`~fleetcore.errors.ConfigError` naming the file, the field and what
was expected.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from fleetcore.configfile import read_config_file
from fleetcore.errors import ConfigError
from fleetcore.queryguard import QueryLimits, QueryRefused, check_sql

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
CAMERA_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
DatasetFormat = Literal["webdataset", "arrow"]
FORMATS = ("webdataset", "arrow")
#: bounds of one dataset sample: frames per clip, the clip's length (the store's longest clip,
#: fleetcore.clips.config.MAX_CLIP_S) and its decoded pixels (all cameras)
MAX_FRAMES_PER_CLIP = 6000
MAX_CLIP_S = 600.0
MAX_SAMPLE_BYTES = 2 * 2**30

_KNOWN = {
    "name", "description", "store", "where", "sql", "cap_per_trigger", "cap_per_vehicle", "class_weights",
    "val_fraction", "cameras", "frames_per_clip", "frame_rate_hz", "resolution", "format", "shard_bytes",
    "seed", "drop_near_duplicates", "privacy_required", "jpeg_quality", "limits",
}
#: bounds on a spec's query: the QueryLimits defaults, with no row cap (a selection may be as big as the catalog)
DATASET_LIMITS = QueryLimits(max_rows=None)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed, validated dataset spec (see the module docstring for the YAML form)."""

    name: str
    cameras: tuple[str, ...]
    frames_per_clip: int
    frame_rate_hz: float
    resolution: tuple[int, int]  # (W, H)
    description: str = ""
    store: str | None = None
    where: str | None = None
    sql: str | None = None
    cap_per_trigger: int | None = None
    cap_per_vehicle: int | None = None
    class_weights: dict[str, float] = field(default_factory=dict)
    val_fraction: float = 0.0
    format: DatasetFormat = "webdataset"
    shard_bytes: int = 256 * 2**20
    seed: int = 0
    drop_near_duplicates: bool = False
    privacy_required: bool = True
    jpeg_quality: int = 90
    limits: dict[str, Any] = field(default_factory=dict)  # QueryLimits overrides given in the spec
    path: str = "<spec>"  # where it was read from (not part of the identity)

    @property
    def query_limits(self) -> QueryLimits:
        """:data:`DATASET_LIMITS` with the spec's ``limits``."""
        return QueryLimits.from_mapping(self.limits, path=self.path, base=DATASET_LIMITS)

    @property
    def query(self) -> tuple[str, str] | None:
        """(the full SELECT the spec runs over ``clips``, the field it comes from), or None."""
        if self.sql is not None:
            return self.sql, "sql"
        if self.where is not None:
            return f"SELECT * FROM clips WHERE {self.where}", "where"
        return None

    def identity(self) -> dict[str, Any]:
        """The fields that define the dataset's content (excludes ``store`` and ``path``)."""
        d = asdict(self)
        d.pop("path")
        d.pop("store")
        d["cameras"] = list(self.cameras)
        d["resolution"] = list(self.resolution)
        d["class_weights"] = dict(sorted(self.class_weights.items()))
        if self.limits:
            d["limits"] = dict(sorted(self.limits.items()))
        else:
            d.pop("limits")  # a spec without limits keeps the identity (and version) it had before limits existed
        return d

    def to_json(self) -> str:
        """Canonical JSON of :meth:`identity` (sorted keys): stored in the manifest, hashed into the version."""
        return json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def _err(path: str, fld: str | None, problem: str) -> ConfigError:
    return ConfigError(path, problem, field=fld)


def _int(path: str, d: Mapping[str, Any], key: str, *, default: Any = None, minimum: int | None = None, required: bool = False) -> Any:
    if key not in d or d[key] is None:
        if required:
            raise _err(path, key, "is required (an integer)")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(path, key, f"expected an integer, found {v!r}")
    if minimum is not None and v < minimum:
        raise _err(path, key, f"expected an integer >= {minimum}, found {v}")
    return v


def _float(path: str, d: Mapping[str, Any], key: str, *, default: Any = None, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, required: bool = False) -> Any:
    if key not in d or d[key] is None:
        if required:
            raise _err(path, key, "is required (a number)")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise _err(path, key, f"expected a finite number, found {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _err(path, key, f"expected a number {'>' if lo_open else '>='} {lo}, found {v}")
    if hi is not None and v > hi:
        raise _err(path, key, f"expected a number <= {hi}, found {v}")
    return v


def _bool(path: str, d: Mapping[str, Any], key: str, default: bool) -> bool:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if not isinstance(v, bool):
        raise _err(path, key, f"expected true or false, found {v!r}")
    return v


def _sample_bounds(path: str, doc: Mapping[str, Any], cameras: int, res: Any) -> tuple[int, float]:
    """(frames_per_clip, frame_rate_hz), checked against the bounds of one sample (its frames, its
    length and its decoded pixels)."""
    fpc = _int(path, doc, "frames_per_clip", minimum=1, required=True)
    rate = _float(path, doc, "frame_rate_hz", lo=0.0, lo_open=True, hi=1000.0, required=True)
    if fpc > MAX_FRAMES_PER_CLIP or fpc / rate > MAX_CLIP_S:
        raise _err(path, "frames_per_clip", f"{fpc} frames at {rate:g} Hz span {fpc / rate:g} s; expected at most "
                   f"{MAX_FRAMES_PER_CLIP} frames and {MAX_CLIP_S:g} s (the longest clip the store holds)")
    pixels = fpc * cameras * int(res[0]) * int(res[1]) * 3
    if pixels > MAX_SAMPLE_BYTES:
        raise _err(path, "frames_per_clip", f"a sample of {fpc} frames x {cameras} cameras at {res[0]}x{res[1]} is "
                   f"{pixels / 2**30:.1f} GiB of pixels; expected at most {MAX_SAMPLE_BYTES / 2**30:g} GiB")
    return fpc, rate


def parse_spec(doc: Any, *, path: str = "<spec>") -> DatasetSpec:
    """Validate a spec mapping (as loaded from YAML). Raises ConfigError(path, problem, field=...)."""
    if not isinstance(doc, Mapping):
        raise _err(path, None, f"expected a mapping of spec fields, found {type(doc).__name__}")
    unknown = sorted(set(map(str, doc)) - _KNOWN)
    if unknown:
        raise _err(path, unknown[0], f"unknown field; expected one of {sorted(_KNOWN)}")
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _err(path, "name", f"expected a name of letters, digits, '_' or '-' (no dots, at most 64), found {name!r}")
    desc = doc.get("description") or ""
    if not isinstance(desc, str):
        raise _err(path, "description", f"expected a string, found {desc!r}")
    store = doc.get("store")
    if store is not None and (not isinstance(store, str) or not store):
        raise _err(path, "store", f"expected a clip store path, found {store!r}")
    where, sql = doc.get("where"), doc.get("sql")
    if where is not None and sql is not None:
        raise _err(path, "sql", "give either 'where' (a predicate) or 'sql' (a full SELECT), not both")
    for key, v in (("where", where), ("sql", sql)):
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise _err(path, key, f"expected a non-empty SQL string, found {v!r}")
    if sql is not None and not re.match(r"(?is)^\s*(select|with)\b", sql):
        raise _err(path, "sql", "expected a full SELECT statement over table 'clips'")
    weights_raw = doc.get("class_weights") or {}
    if not isinstance(weights_raw, Mapping):
        raise _err(path, "class_weights", f"expected a mapping trigger -> weight, found {weights_raw!r}")
    weights: dict[str, float] = {}
    for k, v in weights_raw.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or v < 0:
            raise _err(path, f"class_weights.{k}", f"expected a finite weight >= 0, found {v!r}")
        weights[k] = float(v)
    cams = doc.get("cameras")
    if isinstance(cams, str):
        cams = [cams]
    if not isinstance(cams, list) or not cams:
        raise _err(path, "cameras", f"expected a non-empty list of camera names, found {cams!r}")
    for i, c in enumerate(cams):
        if not isinstance(c, str) or not CAMERA_RE.match(c):
            raise _err(path, f"cameras[{i}]", f"expected a camera name (lowercase letters, digits, _ -), found {c!r}")
    if len(set(cams)) != len(cams):
        raise _err(path, "cameras", f"camera names repeat: {cams}")
    res = doc.get("resolution")
    if (
        not isinstance(res, (list, tuple))
        or len(res) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and 8 <= x <= 8192 for x in res)
    ):
        raise _err(path, "resolution", f"expected [W, H], two integers in 8..8192, found {res!r}")
    jq = _int(path, doc, "jpeg_quality", default=90, minimum=1)
    if jq > 100:
        raise _err(path, "jpeg_quality", f"expected an integer in 1..100, found {jq}")
    fmt = doc.get("format", "webdataset")
    if fmt not in FORMATS:
        raise _err(path, "format", f"expected one of {list(FORMATS)}, found {fmt!r}")
    limits_raw = doc.get("limits")
    limits = QueryLimits.from_mapping(limits_raw, path=path, base=DATASET_LIMITS)
    limits_given = {str(k): v for k, v in (limits_raw or {}).items()}
    for key, text in (("where", where), ("sql", sql)):
        if text is not None:
            check_spec_query(path, key, text if key == "sql" else f"SELECT * FROM clips WHERE {text}", limits)
    fpc, rate = _sample_bounds(path, doc, len(cams), res)
    return DatasetSpec(
        name=name,
        description=desc,
        store=store,
        where=where,
        sql=sql,
        cap_per_trigger=_int(path, doc, "cap_per_trigger", minimum=1),
        cap_per_vehicle=_int(path, doc, "cap_per_vehicle", minimum=1),
        class_weights=weights,
        val_fraction=_float(path, doc, "val_fraction", default=0.0, lo=0.0, hi=1.0),
        cameras=tuple(cams),
        frames_per_clip=fpc,
        frame_rate_hz=rate,
        resolution=(int(res[0]), int(res[1])),
        format=fmt,
        shard_bytes=_int(path, doc, "shard_bytes", default=256 * 2**20, minimum=1024),
        seed=_int(path, doc, "seed", default=0, minimum=0),
        drop_near_duplicates=_bool(path, doc, "drop_near_duplicates", False),
        privacy_required=_bool(path, doc, "privacy_required", True),
        jpeg_quality=jq,
        limits=limits_given,
        path=path,
    )


def spec_hint(limit: str) -> str:
    """How to raise a limit from a dataset spec."""
    return f"raise limits.{limit} in the spec"


def check_spec_query(path: str, fld: str, query: str, limits: QueryLimits) -> set[str]:
    """:func:`~fleetcore.queryguard.check_sql` over table ``clips``, refusals as a one-line
    ConfigError naming the spec file and ``fld`` (the message never quotes what a query would read)."""
    try:
        return check_sql(query, tables=("clips",), limits=limits, hint=spec_hint)
    except QueryRefused as exc:
        raise _err(path, fld, exc.problem) from exc


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a YAML (or JSON) spec file."""
    p = Path(path)
    return parse_spec(read_config_file(p, what="the dataset spec"), path=str(p))


def spec_from_json(text: str, *, path: str = "<manifest>") -> DatasetSpec:
    """The spec stored in a dataset manifest (``DatasetSpec.to_json``)."""
    return parse_spec(json.loads(text), path=path)
