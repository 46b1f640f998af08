"""What an initial load reports: its options, its figures, the rows it refused."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MODES = ("auto", "fast", "indexed")


@dataclass(frozen=True)
class RowProblem:
    """One bad field of one row; the description names the rule, never the value."""

    line: int
    field: str
    description: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.description}"


class BulkLoadError(Exception):
    """The file was not loaded and nothing was written."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = (), invalid_rows: int = 0) -> None:
        super().__init__(message)
        self.problems = list(problems)
        self.invalid_rows = invalid_rows


class FastModeRefused(BulkLoadError):
    """Fast mode was required but the register is not empty."""


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    rows: int
    """Rows checked so far (loaded or not)."""
    seconds: float


@dataclass(frozen=True)
class LoadOptions:
    mode: str = "auto"
    """auto: fast when the register is empty, else into the indexed tables; fast: refuse a non-empty
    register; indexed: never drop indexes."""
    skip_invalid: bool = False
    forward: bool = False
    """Write outbox rows, so that the relay sends every loaded person to the agency."""
    file_format: str | None = None
    """jsonl or csv; by default from the file name (.csv is CSV, anything else JSON lines)."""
    id_prefix: str = "load-"
    """Notification id of a row without one: prefix + line number."""
    workers: int | None = None
    """Worker processes preparing rows; None: one per core for large files, none for small ones."""
    chunk_bytes: int = 4 << 20
    max_problems: int = 100
    """Bad rows reported in detail (all are counted)."""
    progress: Callable[[Progress], None] | None = None


@dataclass
class LoadReport:
    persons: int = 0
    skipped: int = 0
    """Bad rows left out (skip_invalid)."""
    problems: list[RowProblem] = field(default_factory=list)
    fast: bool = False
    seconds: float = 0.0
    index_seconds: float = 0.0
    """Of `seconds`: rebuilding keys, indexes and statistics after a fast load."""
    resident_code_warnings: int = 0
    """住民票コード accepted in warn mode although the (UNVERIFIED) check digit did not match."""
    prepare_cpu_seconds: float = 0.0
    """CPU time spent preparing rows (over all workers)."""
    stream_seconds: float = 0.0
    """Of `seconds`: reading, checking and writing the rows (before the rebuild)."""
    database_seconds: float = 0.0
    """Of the streaming time, how long the main process waited on PostgreSQL (COPY and INSERT)."""
