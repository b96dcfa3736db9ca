"""Versioned Arrow contracts between pipeline stages. Imports only pyarrow."""

from schemas.base import Check, Contract, SchemaValidationError
from schemas.v1 import (
    ALL,
    CLIPS,
    CURATED_TELEMETRY,
    DATASET_MANIFEST,
    DRIVE_INDEX,
    DRIVE_MANIFEST,
    FRAME_INDEX,
    LABELS,
    PREDICTIONS,
    QUARANTINE,
    SHARD_INDEX,
    TELEMETRY,
    TELEMETRY_SIGNALS,
    TRIGGER_EVENTS,
    VERSION,
)

__all__ = [
    "ALL",
    "CLIPS",
    "CURATED_TELEMETRY",
    "Check",
    "Contract",
    "DATASET_MANIFEST",
    "DRIVE_INDEX",
    "DRIVE_MANIFEST",
    "FRAME_INDEX",
    "LABELS",
    "PREDICTIONS",
    "QUARANTINE",
    "SHARD_INDEX",
    "SchemaValidationError",
    "TELEMETRY",
    "TELEMETRY_SIGNALS",
    "TRIGGER_EVENTS",
    "VERSION",
]
