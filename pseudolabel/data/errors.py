"""Errors and warnings of the data layer."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


_MAX_LISTED_PROBLEMS = 25


class DataError(ValueError):
    """Bad input data. The message names the file (and CSV line) and the problem.

    `problems` lists every individual problem when several were found at once.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


class DataWarning(UserWarning):
    """Not fatal, but the user should hear about it (empty pool, partial letter coverage...)."""


def problems_error(source: str | Path, summary: str, problems: Sequence[str]) -> DataError:
    """One DataError listing many problems (the first _MAX_LISTED_PROBLEMS in the message)."""
    shown = "\n  ".join(problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return DataError(f"{source}: {summary}:\n  {shown}{tail}", problems)
