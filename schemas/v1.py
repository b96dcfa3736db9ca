"""Version 1 of the Fleet Curator contracts.

Time is always int64 nanoseconds. ``*_ns`` columns without ``utc`` in the name are on
the drive's *vehicle clock* (one monotonic clock per drive, shared by every camera
and the telemetry); ``utc_ns = vehicle_ns + drive.utc_offset_ns``.
Units are SI: m/s, m/s^2, rad, rad/s; brake and throttle are fractions 0..1.
Angles: ``steering_angle_rad`` is the steering-wheel angle, positive = left;
``heading_rad`` is the course over ground, clockwise from true north, in [0, 2*pi).

Telemetry may carry extra columns after the canonical ones (declared in the contract, so still v1):
``x_<name>`` (lowercase ``[a-z0-9_]``), nullable finite float64, in the unit the source gives
(e.g. ``x_engine_rpm``). ``TELEMETRY.conform`` drops them unless ``extras=True``; the schema
metadata ``fleet.contract_extra_prefix`` says which prefix a file's extra columns use.
"""

from __future__ import annotations

import math

import pyarrow as pa

from schemas.base import Check, Contract

NS = pa.int64()
VERSION = 1

CAMERA_NAME_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,31}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"

# --------------------------------------------------------------------------------------
# Drive manifest (landing zone manifest.json, one row per drive)
# --------------------------------------------------------------------------------------
CAMERA_FILE = pa.struct(
    [
        pa.field("path", pa.string(), nullable=False),  # relative to the drive folder
        pa.field("start_ns", NS, nullable=True),  # vehicle-clock time of PTS 0 (container files)
        pa.field("frame_times", pa.string(), nullable=True),  # raw streams: file of per-frame vehicle-clock ns
    ]
)
CAMERA = pa.struct(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("files", pa.list_(pa.field("item", CAMERA_FILE, nullable=False)), nullable=False),
        pa.field("codec", pa.string(), nullable=True),  # declared; probing is authoritative
    ]
)
TELEMETRY_REF = pa.struct(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),  # "parquet" (canonical) | "csv" (canonical columns)
    ]
)

DRIVE_MANIFEST = Contract(
    name="drive_manifest",
    version=VERSION,
    description="One landing drive: identity, clock, camera files and telemetry file.",
    schema=pa.schema(
        [
            pa.field("format_version", pa.int32(), nullable=False),
            pa.field("vehicle_id", pa.string(), nullable=False),
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("utc_offset_ns", NS, nullable=False),  # utc = vehicle clock + offset
            pa.field("cameras", pa.list_(pa.field("item", CAMERA, nullable=False)), nullable=False),
            pa.field("telemetry", TELEMETRY_REF, nullable=True),  # null: video-only drive
            pa.field("source", pa.string(), nullable=True),  # "simulator", "comma2k19", "dashcam", ...
            pa.field("notes", pa.string(), nullable=True),
        ]
    ),
    checks={"format_version": Check(allowed=(1,))},
)

# --------------------------------------------------------------------------------------
# Canonical telemetry
# --------------------------------------------------------------------------------------
TELEMETRY = Contract(
    name="telemetry",
    version=VERSION,
    description="Canonical vehicle telemetry on the vehicle clock, SI units.",
    schema=pa.schema(
        [
            pa.field("t_ns", NS, nullable=False),
            pa.field("speed_mps", pa.float64(), nullable=True),  # null: the source has no speed (a steering-only log)
            pa.field("accel_lon_mps2", pa.float64(), nullable=True),
            pa.field("accel_lat_mps2", pa.float64(), nullable=True),
            pa.field("yaw_rate_radps", pa.float64(), nullable=True),
            pa.field("steering_angle_rad", pa.float64(), nullable=True),
            pa.field("brake", pa.float64(), nullable=True),
            pa.field("throttle", pa.float64(), nullable=True),
            pa.field("gear", pa.int8(), nullable=True),  # -1 reverse, 0 park/neutral, 1.. forward
            pa.field("lat_deg", pa.float64(), nullable=True),
            pa.field("lon_deg", pa.float64(), nullable=True),
            pa.field("heading_rad", pa.float64(), nullable=True),
            pa.field("driver_assist_engaged", pa.bool_(), nullable=True),
            pa.field("shadow_steering_angle_rad", pa.float64(), nullable=True),
        ]
    ),
    checks={
        "t_ns": Check(strictly_increasing=True),
        "speed_mps": Check(finite=True, min=-1.0, max=120.0),
        "accel_lon_mps2": Check(finite=True, min=-40.0, max=40.0),
        "accel_lat_mps2": Check(finite=True, min=-40.0, max=40.0),
        "yaw_rate_radps": Check(finite=True, min=-10.0, max=10.0),
        "steering_angle_rad": Check(finite=True, min=-20.0, max=20.0),
        "brake": Check(finite=True, min=0.0, max=1.0),
        "throttle": Check(finite=True, min=0.0, max=1.0),
        "gear": Check(min=-1, max=12),
        "lat_deg": Check(finite=True, min=-90.0, max=90.0),
        "lon_deg": Check(finite=True, min=-180.0, max=180.0),
        "heading_rad": Check(finite=True, min=0.0, max=2 * math.pi),
        "shadow_steering_angle_rad": Check(finite=True, min=-20.0, max=20.0),
    },
    extra_prefix="x_",
)

TELEMETRY_SIGNALS = [n for n in TELEMETRY.column_names if n != "t_ns"]

# Telemetry as written by the curate job: canonical columns plus identity and date partition.
CURATED_TELEMETRY = Contract(
    name="curated_telemetry",
    version=VERSION,
    description="Canonical telemetry rows of curated drives (Parquet, partitioned by date).",
    schema=pa.schema(
        [pa.field("vehicle_id", pa.string(), nullable=False), pa.field("drive_id", pa.string(), nullable=False)]
        + list(TELEMETRY.schema)
        + [pa.field("date", pa.string(), nullable=False)]
    ),
    checks=dict(TELEMETRY.checks, t_ns=Check()),
)

# --------------------------------------------------------------------------------------
# Per-camera frame index
# --------------------------------------------------------------------------------------
FRAME_INDEX = Contract(
    name="frame_index",
    version=VERSION,
    description="Every video frame (packet) of every camera of a drive, in presentation order.",
    schema=pa.schema(
        [
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("camera", pa.string(), nullable=False),
            pa.field("file_index", pa.int32(), nullable=False),  # index into the camera's files
            pa.field("frame_index", pa.int32(), nullable=False),  # index within that file (presentation order)
            pa.field("pts_ns", NS, nullable=False),  # vehicle clock
            pa.field("is_keyframe", pa.bool_(), nullable=False),
            pa.field("byte_offset", NS, nullable=True),  # packet position in the file, where known
            pa.field("packet_size", pa.int32(), nullable=True),
            # how extraction reaches the file's frames: "index" (the demuxer's seek on the container's
            # index), "byte" (raw stream re-opened at a keyframe's byte offset), "decode" (decoding
            # forward from the file start); null in indexes written before the column existed
            pa.field("seek", pa.string(), nullable=True),
        ]
    ),
    checks={"frame_index": Check(min=0), "file_index": Check(min=0), "seek": Check(allowed=("index", "byte", "decode"))},
)

# --------------------------------------------------------------------------------------
# Drive index (one row per validated drive) and quarantine records
# --------------------------------------------------------------------------------------
DRIVE_INDEX = Contract(
    name="drive_index",
    version=VERSION,
    description="One row per curated drive.",
    schema=pa.schema(
        [
            pa.field("vehicle_id", pa.string(), nullable=False),
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("date", pa.string(), nullable=False),  # UTC date of the drive start, YYYY-MM-DD
            pa.field("start_ns", NS, nullable=False),
            pa.field("end_ns", NS, nullable=False),
            pa.field("utc_offset_ns", NS, nullable=False),
            pa.field("cameras", pa.list_(pa.string()), nullable=False),
            pa.field("video_seconds", pa.float64(), nullable=False),  # summed over cameras
            pa.field("telemetry_rows", pa.int64(), nullable=False),
            pa.field("telemetry_max_gap_s", pa.float64(), nullable=False),
            pa.field("source", pa.string(), nullable=True),
            pa.field("source_digests", pa.map_(pa.string(), pa.string()), nullable=False),  # relpath -> sha256
            pa.field("path", pa.string(), nullable=False),  # drive folder URI
        ]
    ),
)

QUARANTINE = Contract(
    name="quarantine",
    version=VERSION,
    description="A drive (or clip) set aside, with a machine-readable reason.",
    schema=pa.schema(
        [
            pa.field("vehicle_id", pa.string(), nullable=True),
            pa.field("drive_id", pa.string(), nullable=True),
            pa.field("clip_id", pa.string(), nullable=True),
            pa.field("path", pa.string(), nullable=False),
            pa.field("stage", pa.string(), nullable=False),  # validate | extract | label | privacy | ...
            pa.field("code", pa.string(), nullable=False),  # e.g. video_truncated, telemetry_unsorted
            pa.field("file", pa.string(), nullable=True),  # the offending file, relative to the drive
            pa.field("message", pa.string(), nullable=False),
        ]
    ),
)

# --------------------------------------------------------------------------------------
# Trigger events
# --------------------------------------------------------------------------------------
TRIGGER_EVENTS = Contract(
    name="trigger_events",
    version=VERSION,
    description="A trigger firing: the raw event interval and the clip window it asks for.",
    schema=pa.schema(
        [
            pa.field("vehicle_id", pa.string(), nullable=False),
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("trigger", pa.string(), nullable=False),
            pa.field("trigger_version", pa.int32(), nullable=False),
            pa.field("priority", pa.int32(), nullable=False),
            pa.field("event_start_ns", NS, nullable=False),
            pa.field("event_end_ns", NS, nullable=False),
            pa.field("window_start_ns", NS, nullable=False),  # with pre-roll
            pa.field("window_end_ns", NS, nullable=False),  # with post-roll
            pa.field("peak_ns", NS, nullable=True),
            pa.field("peak_value", pa.float64(), nullable=True),
        ]
    ),
)

# --------------------------------------------------------------------------------------
# Clip catalog
# --------------------------------------------------------------------------------------
CLIPS = Contract(
    name="clips",
    version=VERSION,
    description="The clip catalog: one row per clip in the clip store.",
    schema=pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("vehicle_id", pa.string(), nullable=False),
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("date", pa.string(), nullable=False),
            pa.field("start_ns", NS, nullable=False),
            pa.field("end_ns", NS, nullable=False),
            pa.field("start_utc", pa.timestamp("ns", tz="UTC"), nullable=False),
            pa.field("duration_s", pa.float64(), nullable=False),
            pa.field("triggers", pa.list_(pa.string()), nullable=False),
            pa.field("primary_trigger", pa.string(), nullable=False),
            pa.field("priority", pa.int32(), nullable=False),
            pa.field("cameras", pa.list_(pa.string()), nullable=False),
            pa.field("n_samples", pa.int32(), nullable=False),
            pa.field("sample_rate_hz", pa.float64(), nullable=False),
            pa.field("missing_frames", pa.int32(), nullable=False),
            pa.field("speed_min_mps", pa.float64(), nullable=True),
            pa.field("speed_mean_mps", pa.float64(), nullable=True),
            pa.field("speed_max_mps", pa.float64(), nullable=True),
            pa.field("peak_decel_mps2", pa.float64(), nullable=True),
            pa.field("peak_lat_accel_mps2", pa.float64(), nullable=True),
            pa.field("lat_min", pa.float64(), nullable=True),
            pa.field("lat_max", pa.float64(), nullable=True),
            pa.field("lon_min", pa.float64(), nullable=True),
            pa.field("lon_max", pa.float64(), nullable=True),
            pa.field("shard", pa.string(), nullable=False),
            pa.field("member_key", pa.string(), nullable=False),
            pa.field("config_version", pa.string(), nullable=False),
            pa.field("source_digests", pa.map_(pa.string(), pa.string()), nullable=False),
            # Key labels as typed columns (every value, with its labeller and version, is in LABELS).
            pa.field("time_of_day", pa.string(), nullable=True),  # day | dusk_dawn | night | unknown
            pa.field("manoeuvre", pa.string(), nullable=True),
            pa.field("speed_band", pa.string(), nullable=True),
            pa.field("road_type", pa.string(), nullable=True),
            pa.field("scene_light", pa.string(), nullable=True),
            pa.field("light_conflict", pa.string(), nullable=True),
            pa.field("pedestrians", pa.bool_(), nullable=True),
            pa.field("pedestrian_count", pa.int32(), nullable=True),
            pa.field("camera_blocked", pa.bool_(), nullable=True),  # any camera blocked / occluded
            pa.field("camera_blurry", pa.bool_(), nullable=True),
            pa.field("labellers", pa.map_(pa.string(), pa.string()), nullable=True),  # name -> version
            pa.field("privacy", pa.bool_(), nullable=False),  # faces and plates blurred before encoding
            pa.field("regions_blurred", pa.int32(), nullable=True),
            pa.field("phash", pa.string(), nullable=True),  # perceptual hashes of keyframes, comma-separated hex
            pa.field("near_duplicate_of", pa.string(), nullable=True),  # an earlier clip it nearly repeats
        ]
    ),
    checks={"clip_id": Check(unique=True), "n_samples": Check(min=0)},
)

# --------------------------------------------------------------------------------------
# Labels (long format: one row per clip x labeller x label)
# --------------------------------------------------------------------------------------
LABELS = Contract(
    name="labels",
    version=VERSION,
    description="Label values per clip, each carrying the labeller name and version that produced it.",
    schema=pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("labeller", pa.string(), nullable=False),
            pa.field("labeller_version", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("value", pa.string(), nullable=True),  # categorical / JSON
            pa.field("score", pa.float64(), nullable=True),  # numeric value or confidence
        ]
    ),
)

# --------------------------------------------------------------------------------------
# Model predictions (imported with `fleet predictions import`; one row per clip or per frame)
# --------------------------------------------------------------------------------------
PREDICTIONS = Contract(
    name="predictions",
    version=VERSION,
    description="A model's outputs joined to clips: per clip (t_ns null) or per frame (t_ns on the vehicle clock).",
    schema=pa.schema(
        [
            pa.field("model", pa.string(), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("vehicle_id", pa.string(), nullable=False),
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("t_ns", NS, nullable=True),  # null: a per-clip prediction
            pa.field("score", pa.float64(), nullable=True),  # confidence of class_label (0..1)
            pa.field("class_label", pa.string(), nullable=True),  # the predicted class
            pa.field("classes", pa.list_(pa.string()), nullable=True),  # class names of scores
            pa.field("scores", pa.list_(pa.float64()), nullable=True),  # per-class scores
            pa.field("steering_angle_rad", pa.float64(), nullable=True),  # predicted controls (SI, + = left)
            pa.field("speed_mps", pa.float64(), nullable=True),
            pa.field("accel_lon_mps2", pa.float64(), nullable=True),
            pa.field("traj_x_m", pa.list_(pa.float64()), nullable=True),  # predicted path, ego frame: x forward
            pa.field("traj_y_m", pa.list_(pa.float64()), nullable=True),  # y left; one point per traj_dt_s
            pa.field("traj_dt_s", pa.float64(), nullable=True),
        ]
    ),
    checks={"score": Check(min=0.0, max=1.0), "traj_dt_s": Check(min=0.0)},
)

# --------------------------------------------------------------------------------------
# Shard index (clip store and datasets)
# --------------------------------------------------------------------------------------
SHARD_INDEX = Contract(
    name="shard_index",
    version=VERSION,
    description="One row per tar member: where each sample's files lie inside a shard.",
    schema=pa.schema(
        [
            pa.field("shard", pa.string(), nullable=False),
            pa.field("key", pa.string(), nullable=False),  # sample key (WebDataset __key__)
            pa.field("member", pa.string(), nullable=False),  # tar member name
            pa.field("header_offset", NS, nullable=False),
            pa.field("data_offset", NS, nullable=False),
            pa.field("size", NS, nullable=False),
        ]
    ),
)

SHARD_ENTRY = pa.struct(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("samples", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)

LINEAGE = pa.struct(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("drive_id", pa.string(), nullable=False),
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("trigger", pa.string(), nullable=False),
        pa.field("source_digests", pa.map_(pa.string(), pa.string()), nullable=False),
    ]
)

DATASET_MANIFEST = Contract(
    name="dataset_manifest",
    version=VERSION,
    description="A built, immutable dataset version (written last).",
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.string(), nullable=False),
            pa.field("format", pa.string(), nullable=False),  # webdataset | arrow
            pa.field("spec", pa.string(), nullable=False),  # the spec, as JSON
            pa.field("catalog_snapshot", pa.string(), nullable=False),
            pa.field("code_version", pa.string(), nullable=False),
            pa.field("labellers", pa.map_(pa.string(), pa.string()), nullable=False),
            pa.field("privacy", pa.bool_(), nullable=False),
            pa.field("shards", pa.list_(pa.field("item", SHARD_ENTRY, nullable=False)), nullable=False),
            pa.field("samples", pa.list_(pa.field("item", LINEAGE, nullable=False)), nullable=False),
        ]
    ),
    checks={"format": Check(allowed=("webdataset", "arrow"))},
)

ALL = [
    DRIVE_MANIFEST,
    TELEMETRY,
    CURATED_TELEMETRY,
    FRAME_INDEX,
    DRIVE_INDEX,
    QUARANTINE,
    TRIGGER_EVENTS,
    CLIPS,
    LABELS,
    PREDICTIONS,
    SHARD_INDEX,
    DATASET_MANIFEST,
]
