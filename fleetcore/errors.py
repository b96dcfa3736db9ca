"""Typed errors. Every error names the file (or drive) and says what was expected."""

from __future__ import annotations


class FleetError(Exception):
    """Base class of Fleet Curator errors."""


class ConfigError(FleetError):
    """A user-supplied config file (trigger, dataset spec, ...) is invalid.

    ``path`` is the file, ``field`` the offending key (dotted), ``problem`` what is wrong.
    """

    def __init__(self, path: str, field: str | None, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {problem}")


class DriveError(FleetError):
    """A landing drive is bad. ``code`` is machine-readable (e.g. ``video_truncated``);
    ``file`` is the offending file relative to the drive folder (None for the drive as a whole)."""

    def __init__(self, code: str, message: str, *, file: str | None = None, drive: str | None = None) -> None:
        self.code = code
        self.file = file
        self.drive = drive
        self.message = message
        where = file or "drive"
        prefix = f"{drive}: " if drive else ""
        super().__init__(f"{prefix}{where}: {message} [{code}]")

    def as_record(self) -> dict[str, str | None]:
        return {"code": self.code, "file": self.file, "message": self.message}


class DriveIncomplete(FleetError):
    """The drive's upload-complete marker is absent: skip it until it is there (never quarantine)."""


class VideoError(FleetError):
    """A video file cannot be probed or decoded. ``code`` as in DriveError."""

    def __init__(self, path: str, code: str, message: str) -> None:
        self.path = str(path)
        self.code = code
        self.message = message
        super().__init__(f"{self.path}: {message} [{code}]")


class SourceImportError(FleetError):
    """A source recording cannot be imported: names the file and what was expected."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

