"""fleetcore.configfile.read_config_file: YAML or JSON, errors name the file and the problem."""

from __future__ import annotations

import pytest

from fleetcore.configfile import read_config_file
from fleetcore.errors import ConfigError


def test_reads_yaml_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text("detect_every: 3\nnames: [a, b]\n")
    (tmp_path / "b.json").write_text('{"detect_every": 3, "names": ["a", "b"]}')
    assert read_config_file(tmp_path / "a.yaml", what="x") == read_config_file(tmp_path / "b.json", what="x") == {"detect_every": 3, "names": ["a", "b"]}
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "empty.yaml", what="x") is None


@pytest.mark.parametrize(("name", "text", "message"), [
    ("missing.yaml", None, r"missing.yaml: cannot read privacy config: No such file"),
    ("bad.yaml", "a: [1, 2\n", r"bad.yaml: not valid YAML"),
    ("bad.json", "{'a': 1}", r"bad.json: not valid JSON"),
    ("latin1.yaml", b"a: \xff\xfe\n", r"latin1.yaml: cannot read privacy config"),
])
def test_errors_name_the_file_and_the_problem(tmp_path, name, text, message):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    elif text is not None:
        p.write_text(text)
    with pytest.raises(ConfigError, match=message) as ei:
        read_config_file(p, what="privacy config")
    assert ei.value.path == str(p)
