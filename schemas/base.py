"""Versioned Arrow contracts and their validation.

A :class:`Contract` wraps a ``pyarrow.Schema`` whose metadata carries the contract
name and version, plus per-column checks (finite values, ranges, allowed values,
monotonic order). ``validate`` raises :class:`SchemaValidationError` naming the
contract, the column, the first bad row and what was expected.

This module imports only pyarrow (and the standard library).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

META_NAME = b"fleet.contract"
META_VERSION = b"fleet.contract_version"
META_EXTRA = b"fleet.contract_extra_prefix"


class SchemaValidationError(ValueError):
    """A table does not satisfy a contract.

    Attributes name the contract, the column, the first offending row (``None``
    when the problem is not about a row, e.g. a missing column) and what was expected.
    """

    def __init__(
        self,
        contract: str,
        column: str | None,
        row: int | None,
        expected: str,
        found: Any = None,
    ) -> None:
        self.contract = contract
        self.column = column
        self.row = row
        self.expected = expected
        self.found = found
        where = f"column {column!r}" if column is not None else "table"
        if row is not None:
            where += f", row {row}"
        msg = f"{contract}: {where}: expected {expected}"
        if found is not None:
            msg += f", found {found!r}"
        super().__init__(msg)


@dataclass(frozen=True)
class Check:
    """Value rules for one column. All bounds are inclusive."""

    finite: bool = False  # floats must not be NaN / inf (nulls are governed by the field)
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None
    strictly_increasing: bool = False
    unique: bool = False


@dataclass(frozen=True)
class Contract:
    name: str
    version: int
    schema: pa.Schema
    checks: dict[str, Check] = field(default_factory=dict)
    description: str = ""
    #: Columns named ``<extra_prefix><name>`` (lowercase ``[a-z0-9_]``) may follow the declared ones:
    #: nullable float64 with ``extra_check``. None: no extra columns.
    extra_prefix: str | None = None
    extra_check: Check = field(default_factory=lambda: Check(finite=True))

    def __post_init__(self) -> None:
        meta = dict(self.schema.metadata or {})
        meta[META_NAME] = self.name.encode()
        meta[META_VERSION] = str(self.version).encode()
        if self.extra_prefix:
            meta[META_EXTRA] = self.extra_prefix.encode()
        object.__setattr__(self, "schema", self.schema.with_metadata(meta))

    # -- helpers -----------------------------------------------------------------
    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.schema if not f.nullable]

    def is_extra(self, name: str) -> bool:
        """Whether ``name`` is a valid extra column name of this contract (see ``extra_prefix``)."""
        p = self.extra_prefix
        return bool(p) and name not in self.schema.names and _EXTRA_RE.match(name) is not None and name.startswith(p)  # type: ignore[arg-type]

    def extra_columns(self, table: pa.Table) -> list[str]:
        """The extra columns of ``table``, sorted by name."""
        return sorted(c for c in table.column_names if self.is_extra(c))

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def from_pylist(self, rows: Sequence[dict[str, Any]]) -> pa.Table:
        """Build a table with exactly this schema (missing nullable keys become null)."""
        return pa.Table.from_pylist(list(rows), schema=self.schema)

    def conform(self, table: pa.Table, *, extras: bool = False) -> pa.Table:
        """Select and cast the contract's columns (in order), adding null nullable columns.
        With ``extras``, the table's extra columns (see ``extra_prefix``) follow, sorted by name, as float64.

        Raises SchemaValidationError for a missing non-nullable column or a failed cast.
        """
        arrays = []
        for f in self.schema:
            if f.name not in table.column_names:
                if not f.nullable:
                    raise SchemaValidationError(self.name, f.name, None, f"a column of type {f.type}", "missing")
                arrays.append(pa.nulls(table.num_rows, type=f.type))
                continue
            col = table.column(f.name)
            if not col.type.equals(f.type):
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaValidationError(self.name, f.name, None, f"values castable to {f.type}", str(col.type)) from exc
            arrays.append(col)
        schema = self.schema
        if extras:
            for name in self.extra_columns(table):
                col = table.column(name)
                try:
                    arrays.append(col.cast(pa.float64()))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaValidationError(self.name, name, None, "an extra column castable to double", str(col.type)) from exc
                schema = schema.append(pa.field(name, pa.float64(), nullable=True))
        return pa.Table.from_arrays(arrays, schema=schema)

    def validate(self, table: pa.Table) -> pa.Table:
        """Check columns, types, nulls and value rules. Returns the table unchanged.

        Raises SchemaValidationError at the first problem.
        """
        for f in self.schema:
            if f.name not in table.column_names:
                if f.nullable:
                    continue
                raise SchemaValidationError(self.name, f.name, None, f"a column of type {f.type}", "missing")
            col = table.column(f.name)
            if not col.type.equals(f.type):
                raise SchemaValidationError(self.name, f.name, None, f"type {f.type}", str(col.type))
            if not f.nullable and col.null_count:
                row = _first_true(pc.is_null(col))
                raise SchemaValidationError(self.name, f.name, row, "a non-null value", None)
            chk = self.checks.get(f.name)
            if chk is not None:
                _apply_check(self.name, f.name, col, chk)
        self.validate_extras(table, cast=False)
        return table

    def validate_extras(self, table: pa.Table, *, cast: bool = True) -> None:
        """Check the extra columns of ``table`` (float64, or castable to it when ``cast``; ``extra_check``)."""
        for name in self.extra_columns(table):
            col = table.column(name)
            if not pa.types.is_float64(col.type):
                if not cast:
                    raise SchemaValidationError(self.name, name, None, "type double (an extra column)", str(col.type))
                try:
                    col = col.cast(pa.float64())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaValidationError(self.name, name, None, "an extra column castable to double", str(col.type)) from exc
            _apply_check(self.name, name, col, self.extra_check)

    def check_schema_metadata(self, schema: pa.Schema) -> None:
        """Raise if ``schema`` carries another contract's name or a newer version than this code knows."""
        meta = schema.metadata or {}
        name = meta.get(META_NAME)
        if name is not None and name.decode() != self.name:
            raise SchemaValidationError(self.name, None, None, f"contract {self.name!r}", name.decode())
        ver = meta.get(META_VERSION)
        if ver is not None and int(ver) > self.version:
            raise SchemaValidationError(self.name, None, None, f"contract version <= {self.version}", int(ver))


_EXTRA_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int:
    idx = pc.index(mask, True)
    return int(idx.as_py())


def _apply_check(contract: str, name: str, col: pa.ChunkedArray, chk: Check) -> None:
    t = col.type
    is_float = pa.types.is_floating(t)
    if chk.finite and is_float:
        bad = pc.fill_null(pc.invert(pc.is_finite(col)), False)
        if pc.any(bad).as_py():
            row = _first_true(bad)
            raise SchemaValidationError(contract, name, row, "a finite number (NaN and inf are not allowed; use null for missing)", col[row].as_py())
    if chk.min is not None:
        bad = pc.fill_null(pc.less(col, chk.min), False)
        if pc.any(bad).as_py():
            row = _first_true(bad)
            raise SchemaValidationError(contract, name, row, f"a value >= {chk.min}", col[row].as_py())
    if chk.max is not None:
        bad = pc.fill_null(pc.greater(col, chk.max), False)
        if pc.any(bad).as_py():
            row = _first_true(bad)
            raise SchemaValidationError(contract, name, row, f"a value <= {chk.max}", col[row].as_py())
    if chk.allowed is not None:
        bad = pc.fill_null(pc.invert(pc.is_in(col, value_set=pa.array(chk.allowed, type=t))), False)
        if pc.any(bad).as_py():
            row = _first_true(bad)
            raise SchemaValidationError(contract, name, row, f"one of {list(chk.allowed)}", col[row].as_py())
    if chk.strictly_increasing and len(col) > 1:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        diff = pc.subtract(arr.slice(1), arr.slice(0, len(arr) - 1))
        le0 = pc.fill_null(pc.less_equal(diff, 0), False)
        if pc.any(le0).as_py():
            row = _first_true(le0) + 1
            prev, cur = arr[row - 1].as_py(), arr[row].as_py()
            what = "duplicate" if prev == cur else "out-of-order"
            raise SchemaValidationError(
                contract, name, row, f"strictly increasing values (found a {what} value after {prev!r})", cur
            )
    if chk.unique and len(col) > 1:
        if pc.count_distinct(col).as_py() != len(col) - col.null_count:
            vc = pc.value_counts(col)
            dup = next(v["values"].as_py() for v in vc if v["counts"].as_py() > 1)
            row = _first_true(pc.equal(col, pa.scalar(dup, type=t)))
            raise SchemaValidationError(contract, name, row, "unique values", dup)
