"""Typed errors: one base, one constructor.

Every Fleet Curator error is built the same way, ``SomeError(where, problem, *, code=None, ...)``:

* ``where`` names what is wrong: the file, drive, clip, sample, shard or option;
* ``problem`` says what is wrong and what was expected;
* ``code`` is a machine-readable reason (``video_truncated``, ``manifest_invalid`` ...), where the
  error has one.

The message is one line, ``<where>: <problem> [<code>]``. A subclass may take further
keyword-only context (a ConfigError's ``field``, a DriveError's ``drive``) that refines ``where``.
"""

from __future__ import annotations

from typing import ClassVar


class FleetError(Exception):
    """Base class of Fleet Curator errors (see the module docstring)."""

    default_code: ClassVar[str | None] = None

    def __init__(self, where: str | None, problem: str, *, code: str | None = None) -> None:
        self.where = str(where)
        # one line, always: text from a library (a CSV parser's excerpt, a traceback) loses its breaks
        self.problem = " ".join(str(problem).split()) if "\n" in str(problem) or "\r" in str(problem) else str(problem)
        self.code = code if code is not None else self.default_code
        super().__init__(f"{self.where}: {self.problem}" + (f" [{self.code}]" if self.code else ""))


class ConfigError(FleetError):
    """A user-supplied config (trigger, dataset spec, run options ...) is invalid. ``where`` is the
    file (or ``<curate config>``), ``field`` the offending key (dotted)."""

    def __init__(self, path: str, problem: str, *, field: str | None = None, code: str | None = None) -> None:
        self.path = str(path)
        self.field = field
        super().__init__(f"{self.path}: {field}" if field else self.path, problem, code=code)


class DriveError(FleetError):
    """A landing drive is bad. ``where`` is the offending file relative to the drive folder (None:
    the drive as a whole), ``code`` is required (e.g. ``video_truncated``), ``drive`` optionally
    names the drive."""

    def __init__(self, file: str | None, problem: str, *, code: str, drive: str | None = None) -> None:
        self.file = file
        self.drive = drive
        self.message = problem
        where = file or "drive"
        super().__init__(f"{drive}: {where}" if drive else where, problem, code=code)

    def as_record(self) -> dict[str, str | None]:
        return {"code": self.code, "file": self.file, "message": self.message}


class DriveIncomplete(FleetError):
    """The drive's upload-complete marker is absent: skip it until it is there (never quarantine)."""


class VideoError(FleetError):
    """A video file cannot be probed or decoded. ``code`` as in DriveError."""

    def __init__(self, path: str, problem: str, *, code: str) -> None:
        self.path = str(path)
        self.message = problem
        super().__init__(self.path, problem, code=code)


class SourceImportError(FleetError):
    """A source recording cannot be imported: names the file and what was expected."""

    def __init__(self, path: str, problem: str, *, code: str | None = None) -> None:
        self.path = str(path)
        super().__init__(self.path, problem, code=code)
