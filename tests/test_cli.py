"""The `fleet` command: --help everywhere, one-line errors with a non-zero exit, --json output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fleet_cli.main import cli

FLEET = Path(sys.executable).with_name("fleet")


def _commands(group: click.Group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", list(_commands(cli)), ids=lambda p: " ".join(p))
def test_every_command_has_help(path):
    res = CliRunner().invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and len(res.output.splitlines()) > 3


def test_console_script_is_installed():
    out = subprocess.run([str(FLEET), "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("simulate", "import", "validate", "curate", "demo"):
        assert name in out


def test_failure_is_one_line_and_non_zero(tmp_path):
    missing = tmp_path / "nope"
    missing.mkdir()
    (missing / "veh").mkdir()
    proc = subprocess.run([str(FLEET), "curate", "--input", str(tmp_path / "absent"), "--output", str(tmp_path / "s")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    err = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(err) == 1 and err[0].startswith("error:") and "absent" in err[0], proc.stderr


def test_bad_trigger_file_error_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nwhere: 'speed_kmh >'\nmin_duration_s: -1\n")
    proc = subprocess.run([str(FLEET), "curate", "--input", str(tmp_path), "--output", str(tmp_path / "s"), "--triggers", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "bad.yaml" in proc.stderr and "error:" in proc.stderr


def test_validate_json_on_a_landing_zone(tmp_path, make_drive):
    make_drive(tmp_path / "landing", "veh-a", "good")
    bad = make_drive(tmp_path / "landing", "veh-a", "bad")
    (bad / "cameras" / "front" / "000.mp4").write_bytes(b"")
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "landing"), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["drives_valid"] == 1 and s["drives_quarantined"] == 1
    assert s["quarantine"][0]["code"] == "video_empty" and s["quarantine"][0]["file"] == "cameras/front/000.mp4"
    strict = CliRunner().invoke(cli, ["validate", str(tmp_path / "landing"), "--strict", "--json"])
    assert strict.exit_code == 2
