"""The contracts: versions in metadata, typed validation errors naming column, row and expectation."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import SchemaValidationError


def _telemetry(**cols):
    base = {"t_ns": pa.array([0, 20_000_000, 40_000_000], pa.int64()), "speed_mps": pa.array([10.0, 10.5, 11.0])}
    base.update(cols)
    return schemas.TELEMETRY.conform(pa.table(base))


@pytest.mark.parametrize("contract", schemas.ALL, ids=lambda c: c.name)
def test_every_contract_carries_name_and_version_in_metadata(contract, tmp_path):
    meta = contract.schema.metadata
    assert meta[b"fleet.contract"] == contract.name.encode()
    assert meta[b"fleet.contract_version"] == str(schemas.VERSION).encode()
    # The metadata survives a Parquet round trip, so files on disk say which contract they follow.
    p = tmp_path / "t.parquet"
    pq.write_table(contract.empty(), p)
    back = pq.read_schema(p)
    assert back.metadata[b"fleet.contract"] == contract.name.encode()
    contract.check_schema_metadata(back)
    assert contract.validate(contract.empty()).num_rows == 0


def test_newer_contract_version_is_refused():
    newer = schemas.TELEMETRY.schema.with_metadata({b"fleet.contract": b"telemetry", b"fleet.contract_version": b"99"})
    with pytest.raises(SchemaValidationError, match="version <= 1"):
        schemas.TELEMETRY.check_schema_metadata(newer)


def test_valid_telemetry_passes():
    t = _telemetry(heading_rad=pa.array([0.0, 1.0, 2 * math.pi]), gear=pa.array([1, 1, 2], pa.int8()))
    assert schemas.TELEMETRY.validate(t) is t


@pytest.mark.parametrize(
    "cols, column, row, expected",
    [
        ({"speed_mps": pa.array([10.0, float("nan"), 11.0])}, "speed_mps", 1, "finite"),
        ({"speed_mps": pa.array([10.0, 1e9, 11.0])}, "speed_mps", 1, "<= 120"),
        ({"t_ns": pa.array([0, 40, 20], pa.int64())}, "t_ns", 2, "out-of-order"),
        ({"t_ns": pa.array([0, 20, 20], pa.int64())}, "t_ns", 2, "duplicate"),
        ({"brake": pa.array([0.0, 1.5, None])}, "brake", 1, "<= 1.0"),
        ({"t_ns": pa.array([0, None, 40], pa.int64())}, "t_ns", 1, "non-null"),
    ],
)
def test_bad_telemetry_error_names_column_row_and_expectation(cols, column, row, expected):
    t = _telemetry(**cols) if "t_ns" not in cols or cols["t_ns"].null_count == 0 else pa.table(
        {**cols, "speed_mps": pa.array([10.0, 10.0, 10.0])}
    )
    with pytest.raises(SchemaValidationError) as ei:
        schemas.TELEMETRY.validate(t)
    err = ei.value
    assert (err.contract, err.column, err.row) == ("telemetry", column, row)
    assert expected in str(err)
    assert f"row {row}" in str(err) and column in str(err)


def test_missing_required_column_and_wrong_type():
    with pytest.raises(SchemaValidationError, match="'t_ns'.*missing"):
        schemas.TELEMETRY.validate(pa.table({"speed_mps": pa.array([1.0])}))
    with pytest.raises(SchemaValidationError, match="type int64"):
        schemas.TELEMETRY.validate(pa.table({"t_ns": pa.array([1.0]), "speed_mps": [1.0]}))


def test_speed_may_be_unknown():
    """A log without speed (steering only) conforms with a null speed; a null speed validates."""
    t = schemas.TELEMETRY.conform(pa.table({"t_ns": pa.array([0, 20], pa.int64()), "steering_angle_rad": [0.1, 0.2]}))
    assert schemas.TELEMETRY.validate(t).column("speed_mps").null_count == 2


def test_conform_casts_and_fills_optional_columns():
    t = schemas.TELEMETRY.conform(pa.table({"t_ns": [1, 2], "speed_mps": [1, 2]}))
    assert t.schema.equals(schemas.TELEMETRY.schema, check_metadata=False)
    assert t.column("lat_deg").null_count == 2


def test_unique_check_on_clip_ids():
    rows = [
        {"clip_id": "a", "n_samples": 1},
        {"clip_id": "a", "n_samples": 1},
    ]
    t = pa.table({"clip_id": [r["clip_id"] for r in rows], "n_samples": pa.array([1, 1], pa.int32())})
    with pytest.raises(SchemaValidationError, match="unique"):
        schemas.base._apply_check("clips", "clip_id", t.column("clip_id"), schemas.Check(unique=True))
