"""The one error a bad dataset raises: it names the file and line, so a person can open the file and fix it.

A training run that dies on row 48,213 with `KeyError: 'output'` costs the user a search through a large
file; one that says `train.jsonl:48213: missing key 'output'` costs them a minute. Every check in this
package raises `DataError`, and the operator shows its `str()` as the job's failure message unchanged.
It subclasses `UserError` (finetune_api.contract), the root of every mistake a user can fix, so the worker
reports it as one line with exit status 2 like a bad spec.
"""

from __future__ import annotations

from typing import Optional

from finetune_api.contract import UserError


class DataError(UserError):
    """A dataset problem located at a file (or hub dataset) and a line (or row).

    Attributes:
        file: the file's path as the user wrote it (resolved), or `hub:<id>` for a hub dataset.
        line: the 1-based line number in a JSONL file; for a hub dataset the 0-based row index (so
            `dataset[line]` is the row); None when the problem is the whole file (empty, missing).
        message: what is wrong and, where it helps, what to do about it.
    """

    def __init__(self, file: str, line: Optional[int], message: str) -> None:
        """Build the error.

        Args:
            file: path of the file, or `hub:<id>`.
            line: 1-based line number (row index for hub data), or None for the whole file.
            message: the problem, phrased for the person who owns the data.
        """
        self.file = str(file)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        """`<file>:<line>: <message>`, or `<file>: <message>` when no line applies."""
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"

    def __reduce__(self):
        """Pickle by constructor arguments (errors cross process boundaries in dataset workers)."""
        return (type(self), (self.file, self.line, self.message))
