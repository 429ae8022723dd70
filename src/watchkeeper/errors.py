"""One error hierarchy: every error says where it happened and what to do next."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Where:
    """The place an error or warning refers to: a file, a record or line in it, a rule."""

    file: str | None = None
    record: int | None = None
    rule: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.record is not None:
            parts.append(f"record {self.record}")
        if self.rule:
            parts.append(f"rule {self.rule}")
        return ", ".join(parts)


class WatchkeeperError(Exception):
    """Root of every error Watchkeeper raises on purpose."""

    def __init__(self, message: str, where: Where | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where or Where()
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if str(self.where) else self.message
        return f"{text} ({self.hint})" if self.hint else text


class InputError(WatchkeeperError):
    """A file or record could not be read."""


class RuleError(WatchkeeperError):
    """A Sigma rule could not be loaded or compiled."""


class ConfigError(WatchkeeperError):
    """Settings are missing or invalid."""


class LakeError(WatchkeeperError):
    """The Parquet lake could not be read or written."""


class WorkerError(WatchkeeperError):
    """A worker process of a parallel hunt failed, or ended without its results."""
