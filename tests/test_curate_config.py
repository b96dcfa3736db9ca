"""CurateConfig, the curate job's one run config: built directly by the CLI, Dagster, the job's own
argv and the tests; its version covers the privacy and labels options; no environment variable
decides the bytes."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
from click.testing import CliRunner

from fleetcore.clips import CurateConfig, curate_stages
from fleetcore.errors import ConfigError
from fleetcore.stages.options import LabelsOptions, PrivacyOptions


@pytest.fixture
def option_files(tmp_path):
    """A privacy and a labels options file that differ from the defaults."""
    priv = tmp_path / "privacy.yaml"
    priv.write_text("detect_every: 3\nmode: pixelate\n")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"builtins": ["telemetry", "phash"]}))
    return priv, labels


def test_the_same_config_gives_the_same_version_and_each_option_changes_it():
    base = CurateConfig()
    assert CurateConfig() == base and CurateConfig().version() == base.version()
    assert CurateConfig(rate_hz=10, stages=["labels", "privacy"]).version() == base.version()  # normalised: 10 -> 10.0, list -> tuple
    changed = {
        "rate": CurateConfig(rate_hz=5.0),
        "privacy option": CurateConfig(privacy=PrivacyOptions(detect_every=3)),
        "privacy mode": CurateConfig(privacy=PrivacyOptions(mode="pixelate")),
        "privacy detectors": CurateConfig(privacy=PrivacyOptions(detectors=("face",))),
        "labels option": CurateConfig(labels=LabelsOptions(builtins=("telemetry",))),
        "no privacy": CurateConfig(stages=curate_stages(privacy=False)),
    }
    versions = {name: cfg.version() for name, cfg in changed.items()}
    assert base.version() not in versions.values() and len(set(versions.values())) == len(versions), versions
    # the stages' fingerprint is computed by the config itself, from its options
    assert changed["privacy option"].stages_hash != base.stages_hash
    assert changed["labels option"].stages_hash != base.stages_hash
    # worker knobs are not the bytes, nor are the options of a stage the run does not run
    assert CurateConfig(post_workers=0, opencv_threads=4, encode_threads=1).version() == base.version()
    assert CurateConfig(privacy=PrivacyOptions(threads=7)).version() == base.version()
    off = CurateConfig(stages=("labels",))
    assert CurateConfig(stages=("labels",), privacy=PrivacyOptions(detect_every=2)).version() == off.version()


def test_trigger_content_is_in_the_version_not_its_path(tmp_path):
    from fleetcore.triggers.library import TRIGGERS_DIR

    spec = TRIGGERS_DIR / "hard_brake.yaml"
    extra = tmp_path / "a" / "extra.yaml"
    extra.parent.mkdir()
    extra.write_text(spec.read_text().replace("name: hard_brake", "name: extra_copy", 1))
    moved = tmp_path / "b" / "extra.yaml"
    moved.parent.mkdir()
    moved.write_text(extra.read_text())
    with_extra = CurateConfig(trigger_paths=(str(extra),))
    assert with_extra.trigger_hash != CurateConfig().trigger_hash
    assert CurateConfig(trigger_paths=(str(moved),)).version() == with_extra.version()


def test_old_environment_variables_change_nothing(tmp_path, monkeypatch, option_files):
    priv, labels = option_files
    base = CurateConfig()
    stages_before = [s.describe() for s in base.build_stages()]
    monkeypatch.setenv("FLEET_PRIVACY_CONFIG", str(priv))
    monkeypatch.setenv("FLEET_LABELS_CONFIG", str(labels))
    again = CurateConfig()
    assert again == base and again.version() == base.version()
    # a worker builds its stages from the config it was handed, whatever its environment says
    worker_cfg = pickle.loads(pickle.dumps(base))
    assert [s.describe() for s in worker_cfg.build_stages()] == stages_before


def test_a_worker_builds_the_stages_from_the_options_it_was_handed(option_files):
    """The option files are read at launch; the pickled config carries their content."""
    priv, labels = option_files
    cfg = CurateConfig(privacy=PrivacyOptions.from_file(priv), labels=LabelsOptions.from_file(labels))
    blob = pickle.dumps(cfg)
    priv.unlink()
    labels.unlink()
    worker_cfg = pickle.loads(blob)
    assert worker_cfg == cfg and worker_cfg.version() == cfg.version()
    labels_stage, privacy_stage = worker_cfg.build_stages()
    assert [lab.name for lab in labels_stage.labellers] == ["telemetry", "phash"]
    assert (privacy_stage.detect_every, privacy_stage.mode) == (3, "pixelate")


def _cli_config(monkeypatch, args: list[str]) -> CurateConfig:
    """The CurateConfig ``fleet curate`` builds from its options (the job itself not run)."""
    import pipelines.curate
    from fleet_cli.main import cli

    got: list[CurateConfig] = []

    def fake_run(landing, store, cfg, **kw):
        got.append(cfg)
        return {}

    monkeypatch.setattr(pipelines.curate, "run_curate", fake_run)
    res = CliRunner().invoke(cli, ["curate", "--input", "L", "--output", "S", "--json", *args])
    assert res.exit_code == 0, res.output
    (cfg,) = got
    return cfg


def test_dagster_cli_and_job_argv_build_the_same_config(monkeypatch, tmp_path, option_files):
    from dagster_project.assets import CurateRunConfig
    from fleetcore.triggers.library import TRIGGERS_DIR
    from pipelines.curate import build_parser, config_from_args

    priv, labels = option_files
    trig = tmp_path / "triggers"
    trig.mkdir()
    (trig / "extra.yaml").write_text((TRIGGERS_DIR / "hard_brake.yaml").read_text().replace("name: hard_brake", "name: extra_copy", 1))
    opts = ["--rate-hz", "5", "--max-side", "320", "--no-labels", "--privacy-config", str(priv), "--labels-config", str(labels),
            "--triggers", str(trig)]
    cli_cfg = _cli_config(monkeypatch, opts)
    dagster_cfg = CurateRunConfig(labels=False, rate_hz=5.0, max_side=320, privacy_config=str(priv), labels_config=str(labels),
                                  extra_triggers=[str(trig)]).to_curate_config()
    argv_cfg = config_from_args(build_parser().parse_args(["--input", "L", "--output", "S", *opts]))
    assert cli_cfg == dagster_cfg == argv_cfg
    assert cli_cfg.version() == dagster_cfg.version()
    assert cli_cfg.stages == ("privacy",) and cli_cfg.privacy.detect_every == 3 and cli_cfg.labels.builtins == ("telemetry", "phash")
    # and with no options at all, the three give CurateConfig()'s defaults
    assert _cli_config(monkeypatch, []) == CurateRunConfig().to_curate_config() == \
        config_from_args(build_parser().parse_args(["--input", "L", "--output", "S"])) == CurateConfig()


@pytest.mark.parametrize("kw, message", [
    ({"rate_hz": 0}, "<curate config>: rate_hz: expected a number > 0 and <= 240, got 0"),
    ({"max_side": 8}, "<curate config>: max_side: expected an integer from 16 to 8192, got 8"),
    ({"jpeg_quality": 101}, "<curate config>: jpeg_quality: expected an integer from 1 to 100, got 101"),
    ({"post_workers": -1}, "<curate config>: post_workers: expected an integer >= 0, got -1"),
    ({"trigger_paths": "triggers/"}, "<curate config>: trigger_paths: expected a list of names, got 'triggers/'"),
    ({"cameras": ()}, "<curate config>: cameras: expected None (every camera) or at least one camera name"),
    ({"stages": ("labels", "labels")}, "<curate config>: stages: stage 'labels' listed twice"),
    ({"stages": ("nope",)}, "<curate config>: stages: unknown stage 'nope'; registered stages: ['labels', 'privacy']"),
    ({"privacy": {"detect_every": 3}}, "<curate config>: privacy: expected PrivacyOptions, got dict"),
    ({"trigger_paths": ("missing-triggers.yaml",)}, "missing-triggers.yaml"),
])
def test_bad_options_raise_one_line_config_errors(kw, message):
    with pytest.raises(ConfigError) as err:
        CurateConfig(**kw)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_cli_reports_a_bad_option_in_one_line(tmp_path):
    from fleet_cli.main import cli

    priv = tmp_path / "privacy.yaml"
    priv.write_text("detect_evry: 3\n")
    res = CliRunner().invoke(cli, ["curate", "--input", str(tmp_path), "--output", str(tmp_path / "S"), "--rate-hz", "0"])
    assert res.exit_code == 1 and res.output.strip() == "error: <curate config>: rate_hz: expected a number > 0 and <= 240, got 0.0"
    res = CliRunner().invoke(cli, ["curate", "--input", str(tmp_path), "--output", str(tmp_path / "S"), "--privacy-config", str(priv)])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and f"{priv}: detect_evry: unknown key" in res.output


def test_the_config_is_frozen_and_replace_recomputes_what_it_computes(option_files):
    priv, _ = option_files
    cfg = CurateConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rate_hz = 5.0  # type: ignore[misc]
    other = dataclasses.replace(cfg, privacy=PrivacyOptions.from_file(priv))
    assert other.stages_hash != cfg.stages_hash and other == CurateConfig(privacy=PrivacyOptions(detect_every=3, mode="pixelate"))


def test_trigger_files_are_read_once_at_launch(tmp_path):
    """A worker gets the trigger library the launcher read: the files may be gone (or differ) where it runs."""
    import pickle

    from fleetcore.clips import load_trigger_library

    d = tmp_path / "triggers"
    d.mkdir()
    (d / "slow.yaml").write_text('name: slow_roll\nversion: 1\ndescription: test\nwhere: "speed_mps < 2.0"\nmin_duration_s: 1.0\n'
                                 'pre_roll_s: 1.0\npost_roll_s: 1.0\ncooldown_s: 5.0\npriority: 5\n')
    cfg = CurateConfig(trigger_paths=(str(d),))
    worker = pickle.loads(pickle.dumps(cfg))
    (d / "slow.yaml").unlink()
    names = [t.name for t in load_trigger_library(worker)]
    assert "slow_roll" in names and "hard_brake" in names
    assert worker.version() == cfg.version() and worker.trigger_hash == cfg.trigger_hash
    assert "triggers" not in cfg.as_dict() and cfg.as_dict()["trigger_paths"] == (str(d),)
