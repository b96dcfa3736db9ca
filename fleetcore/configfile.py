"""Reading user config files (trigger files, dataset specs, labels and privacy configs) with one
error shape: a :class:`~fleetcore.errors.ConfigError` naming the file and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleetcore.errors import ConfigError


def read_config_file(path: str | Path, *, what: str) -> Any:
    """The parsed document of a YAML file (JSON when the name ends in ``.json``).

    ``what`` names the file's role in the error message (``"trigger file"``, ``"labels config"``...).
    An unreadable file gives ``<path>: cannot read <what>: <reason>``; a malformed one
    ``<path>: not valid YAML: ...`` (or JSON)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), None, f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from exc
    if p.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(str(p), None, f"not valid JSON: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), None, f"not valid YAML: {exc}") from exc
