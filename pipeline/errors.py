"""One exception hierarchy; each class carries the exit code SPEC §12 gives it.

The CLI turns any `MilestonesError` into a one-line ``Error: ...`` message and its exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MilestonesError(Exception):
    """Base class of every expected failure."""

    exit_code: int = 1

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail  # shown only with --verbose


class InputError(MilestonesError):
    """Invalid input or definitions: a file, a row, a field (exit 1)."""

    exit_code = 1


class ConfigError(InputError):
    """milestones.toml is malformed or holds an unknown key or a bad value (exit 1)."""


class DefinitionError(InputError):
    """A group body failed validation; `problems` holds every ``{code, message}``."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UsageError(MilestonesError):
    """The command line itself is wrong (exit 2)."""

    exit_code = 2


class GroupsFailedError(MilestonesError):
    """The run finished, but some groups failed (exit 3)."""

    exit_code = 3


class DatabaseBusyError(MilestonesError):
    """Another run holds the database (exit 4)."""

    exit_code = 4


class MissingAttributeError(MilestonesError):
    """A rule names an attribute that no loaded column provides; fails only its group."""

    exit_code = 3
