"""One exception type for everything a user can cause, so the CLI can print one line and exit."""

from __future__ import annotations

from pathlib import Path


class FaceanonError(Exception):
    """A user-facing failure: the message is one line that names the file and the reason."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path else reason)
