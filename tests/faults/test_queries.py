"""Query faults: hostile or runaway SQL through `fleet mine` and a dataset spec's `sql:` / `where:`.
Each must be refused (or stopped) with a one-line typed error, fast, with no file content echoed."""

from __future__ import annotations

import time

import pytest

from fleetcore.errors import FleetError

SQL_FAULTS = {
    "or_chain_5500_terms": "SELECT * FROM clips WHERE " + " OR ".join(f"speed_mean_mps > {i}" for i in range(5500)),
    "nested_parens_3000": "SELECT * FROM clips WHERE " + "(" * 3000 + "1 = 1" + ")" * 3000,
    "five_way_cross_join": "SELECT * FROM clips a, clips b, clips c, clips d, clips e",
    "read_parquet_outside_store": "SELECT * FROM read_parquet('/etc/hosts')",
    "read_csv_system_file": "SELECT * FROM read_csv('/etc/passwd')",
    "write_statement": "DROP TABLE clips",
    "two_statements": "SELECT * FROM clips; SELECT * FROM clips",
    "statement_too_long": "SELECT * FROM clips WHERE clip_id IN (" + ",".join(f"'{i:08d}'" for i in range(4000)) + ")",
}


@pytest.mark.parametrize("name", sorted(SQL_FAULTS))
def test_mine_refuses(name, ledger):
    from fleetcore.queryguard import check_sql

    t = time.monotonic()
    outcome = "handled"
    try:
        check_sql(SQL_FAULTS[name], tables=["clips", "clip_labels"])
        outcome = "wrong"
    except FleetError as exc:
        if "\n" in str(exc) or "root:" in str(exc):
            outcome = "wrong"
    except Exception:  # noqa: BLE001 - a traceback is what the suite counts
        outcome = "traceback"
    if time.monotonic() - t > 5:
        outcome = "wrong"
    ledger.record(f"sql/mine_{name}", outcome)
    assert outcome == "handled"


@pytest.mark.parametrize("name", ["read_parquet_outside_store", "read_csv_system_file", "nested_parens_3000", "five_way_cross_join"])
def test_dataset_spec_refuses(name, ledger, tmp_path):
    from fleetcore.datasets.spec import parse_spec
    from fleetcore.errors import ConfigError

    doc = {"name": "x", "store": str(tmp_path), "sql": SQL_FAULTS[name], "cameras": ["front"], "frames_per_clip": 2,
           "frame_rate_hz": 1.0, "resolution": [32, 32]}
    outcome = "handled"
    try:
        parse_spec(doc, path="spec.yaml")
        outcome = "wrong"
    except ConfigError as exc:
        if "\n" in str(exc) or "root:" in str(exc) or not str(exc).startswith("spec.yaml: sql"):
            outcome = "wrong"
    except Exception:  # noqa: BLE001
        outcome = "traceback"
    ledger.record(f"sql/dataset_spec_{name}", outcome)
    assert outcome == "handled"
