"""Errors a user can hit. Each message says what is wrong and what to do."""

from __future__ import annotations


class AutotuneError(Exception):
    """Base of every error autotune reports to a user (exit code 1 unless stated)."""

    exit_code = 1


class SpaceError(AutotuneError):
    """The search-space file is invalid. Names the file and the field path."""

    exit_code = 2

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: invalid search space"]
        lines += [f"  {loc or '<top>'}: {msg}" for loc, msg in problems]
        super().__init__("\n".join(lines))


class StudyNotFoundError(AutotuneError):
    def __init__(self, name: str, storage: str) -> None:
        super().__init__(
            f"no study named {name!r} in {storage}; `autotune study list --storage URL` shows "
            "the studies there"
        )


class TrialNotFoundError(AutotuneError):
    pass


class StorageError(AutotuneError):
    pass


class OptionError(AutotuneError):
    """A command-line option's value cannot be used (a file that cannot be read, a clash)."""

    exit_code = 2
