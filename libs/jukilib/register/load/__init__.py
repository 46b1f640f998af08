"""Initial bulk load of a register (`juki load`): an existing file, checked row by row with the rules of
the RPC path, decided and built into rows as the RPC path does (a 記載 of a new person per row:
`workers`), written with COPY (`copy`) in one transaction.

A loaded version is the receipt of a notification (the engine's invariant), which protects the ids: a CS
that later sends a notification under an id the file carried gets NOTIFICATION_ID_REUSED. Its digest is
a constant no real request hashes to (there was no request). No outbox rows unless `forward`: the agency
already holds the existing file.

A bad row is reported by line number and field, never by value. By default one bad row stops the load
and nothing is written (the rest of the file is still checked, so that every bad row is reported at
once); `skip_invalid` loads the good rows and counts the rest. Rows repeating a 住民票コード or a
notification id of an earlier row, or of the register, are bad rows.

Memory stays bounded whatever the size of the file in fast mode (the usual initial load): rows repeating
an earlier row are found by the database, by the unique keys rebuilt at the end (or, when the load fails
anyway, by a bounded query), and their lines by a second pass over the file (`_Loader.fail_on_repeats`). In
indexed mode and with `skip_invalid` the values seen are remembered per row instead: a repeated row must
be found before its chunk is written (the unique indexes exist, or the row is to be left out).

Fast mode (the default when the register is empty) drops the tables' keys and indexes and rebuilds
them after (`tables`), in the load's transaction: a failure anywhere leaves the register as it was. Rows
are prepared in worker processes while the main process streams finished chunks to PostgreSQL, in
file order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import gc
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import asyncpg

from jukilib.collector import return_large_buffers
from jukilib.recordfile import (
    FORMATS,
    Chunk,
    CsvColumns,
    RecordFileError,
    file_format_of,
    read_chunks,
    read_header,
    record_dict,
)
from jukilib.register.api import RegisterApi
from jukilib.register.load import copy, tables
from jukilib.register.load.results import (
    MODES,
    BulkLoadError,
    FastModeRefused,
    LoadOptions,
    LoadReport,
    Progress,
    RowProblem,
)
from jukilib.register.load.workers import LOAD_DIGEST, ChunkPreparer, Prepared, Task, install, prepare_installed

logger = logging.getLogger(__name__)
_SMALL_FILE = 8 << 20  # below this, rows are prepared in-process (no worker start-up)
_COLLECT_EVERY = 16
"""Chunks between full collections in the main process: finished chunks leave reference cycles that hold
their rows, and with the young-generation threshold of a load (`collect_young_rarely`) these reach the
oldest generation, collected only after millions of rows (docs/performance.md, "Initial load")."""


def _abandon(futures: Iterable[asyncio.Future[Prepared]]) -> None:
    """Chunks still in preparation when a load stops (a failed chunk, a worker that died: every pending
    chunk then fails alike): cancelled, or their outcome taken, so that the load fails with its first error
    and not also with one "exception was never retrieved" per chunk."""
    for future in futures:
        if not future.cancel() and not future.cancelled():
            future.exception()


class _Loader:
    """Streams prepared chunks into the database in file order, keeping a few chunks in preparation."""

    def __init__(self, connection: asyncpg.Connection, preparer: ChunkPreparer, *, plan: tables.Plan,
                 options: LoadOptions, report: LoadReport, bytes_total: int) -> None:
        self._connection = connection
        self._preparer = preparer
        self._plan = plan
        self._options = options
        self._report = report
        self._seen: set[object] | None = set() if not plan.fast or options.skip_invalid else None
        """住民票コード (str), receipts (tuples) and unique keys (bytes) of the rows so far: distinct types.
        None in fast mode without skip_invalid: the database finds the repeated values."""
        self._invalid = 0
        self._rows = 0
        self._failed = False
        self._started = time.perf_counter()
        self._bytes_total = bytes_total
        self._executor: ProcessPoolExecutor | None = None
        self._workers = 0

    def _submit(self, task: Task) -> asyncio.Future[Prepared]:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            done: asyncio.Future[Prepared] = loop.create_future()
            try:
                done.set_result(self._preparer.prepare(task))
            except Exception as error:  # handed to the awaiting side, as from a worker
                done.set_exception(error)
            return done
        return asyncio.wrap_future(self._executor.submit(prepare_installed, task))

    def start(self, workers: int) -> None:
        self._workers = workers
        if workers:
            self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                 initializer=install, initargs=(self._preparer,))

    def close(self) -> None:
        """End the worker processes (before the rebuild: their memory is PostgreSQL's meanwhile)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def _in_order(self, tasks: Iterator[Task]) -> AsyncIterator[tuple[Task, Prepared]]:
        """The tasks prepared, in file order, a few at a time in preparation."""
        window: deque[tuple[Task, asyncio.Future[Prepared]]] = deque()
        try:
            for task in tasks:
                if task.index % _COLLECT_EVERY == _COLLECT_EVERY - 1:
                    gc.collect()
                window.append((task, self._submit(task)))
                if len(window) > max(2 * self._workers, 1):
                    done, pending = window.popleft()
                    yield done, await pending
            while window:
                done, pending = window.popleft()
                yield done, await pending
        finally:
            _abandon(future for _, future in window)

    async def run(self, chunks: Iterator[Chunk]) -> None:
        # In fast mode without remembered values, rows are written after a failure too (the transaction is
        # rolled back anyway): the database must hold them to find the rows repeating an earlier one.
        check_only = self._seen is not None
        tasks = (Task(index, chunk, check_only=check_only and self._failed) for index, chunk in enumerate(chunks))
        async for task, prepared in self._in_order(tasks):
            await self._handle(task, prepared)

    async def _handle(self, task: Task, prepared: Prepared) -> None:
        self._rows += prepared.rows
        self._invalid += prepared.invalid
        self._report.resident_code_warnings += prepared.code_warnings
        self._report.prepare_cpu_seconds += prepared.cpu_seconds
        self._problems(prepared.problems)
        writing = time.perf_counter()
        duplicates = self._duplicates(prepared)
        if not self._plan.fast and prepared.resident_codes:
            duplicates += await tables.already_known(self._connection, prepared, self._preparer.unique_key_field)
        if duplicates:
            self._invalid += len({problem.line for problem in duplicates})
            self._problems(duplicates)
            if self._options.skip_invalid and not self._failed:
                prepared = await self._submit(dataclasses.replace(
                    task, exclude=task.exclude | {problem.line for problem in duplicates}))
        if (prepared.invalid or duplicates) and not self._options.skip_invalid:
            self._failed = True
        if prepared.secrets_kept and not self._preparer.hooks_have_tables:
            raise BulkLoadError("the register keeps data apart from its records but its hooks cannot bulk load it")
        if (not self._failed or self._seen is None) and prepared.lines:
            await copy.write(self._connection, prepared.encoded)
            self._report.persons += len(prepared.lines)
        self._report.database_seconds += time.perf_counter() - writing
        self._progress(task.chunk.offset)

    def _duplicates(self, prepared: Prepared) -> list[RowProblem]:
        """Rows that repeat an earlier row's 住民票コード, notification id or unique key (a later notification
        would be refused as ALREADY_RECORDED, NOTIFICATION_ID_REUSED or <KEY>_IN_USE); the first stays."""
        if self._seen is None:
            return []
        values: list[object] = [*prepared.resident_codes, *prepared.receipts,
                                *(key for keys in prepared.unique_keys for key in keys)]
        distinct = set(values)
        if len(distinct) == len(values) and self._seen.isdisjoint(distinct):
            self._seen |= distinct  # nearly every chunk: nothing repeated, one set operation
            return []
        problems: list[RowProblem] = []
        seen: set[object] = self._seen
        for line, code, receipt, keys in zip(prepared.lines, prepared.resident_codes, prepared.receipts,
                                             prepared.unique_keys, strict=True):
            for field, row_values in (("resident_code", (code,)), ("notification_id", (receipt,)),
                                      (self._preparer.unique_key_field, keys)):
                if any(value in seen for value in row_values):
                    problems.append(RowProblem(line, field, "appears on an earlier line"))
                seen.update(row_values)
        return problems

    def _problems(self, problems: list[RowProblem]) -> None:
        room = self._options.max_problems - len(self._report.problems)
        if room > 0:
            self._report.problems.extend(problems[:room])

    def _progress(self, offset: int) -> None:
        if self._options.progress is not None:
            self._options.progress(Progress(offset, self._bytes_total, self._rows,
                                            time.perf_counter() - self._started))

    @property
    def repeats_in_database(self) -> bool:
        """Whether the database finds the rows repeating an earlier one (fast mode without skip_invalid)."""
        return self._seen is None

    async def finish(self, chunks: Callable[[], Iterator[Chunk]]) -> None:
        """Fail (BulkLoadError) when a row was bad, naming in fast mode the rows repeating an earlier one too."""
        if self._invalid and not self._options.skip_invalid:
            if self._seen is None:
                await self.fail_on_repeats(await tables.repeated_values(self._connection, self._plan), chunks)
            self._fail()
        self._report.skipped = self._invalid

    def _fail(self) -> None:
        raise BulkLoadError(f"{self._invalid} of {self._rows} rows are invalid; nothing was loaded",
                            self._report.problems, self._invalid)

    async def fail_on_repeats(self, repeated: tables.Repeated, chunks: Callable[[], Iterator[Chunk]]) -> None:
        """With values the database found repeated: fail naming the lines that repeat an earlier row, found
        by a second pass over the file (memory: the repeated values, bounded by `tables.repeated_values`)."""
        if not repeated:
            return
        problems: list[RowProblem] = []
        first: set[object] = set()
        wanted: set[object] = {*repeated.codes, *repeated.receipts, *repeated.keys}
        key_field = self._preparer.unique_key_field
        if self._executor is None:
            self.start(self._workers)
        tasks = (Task(index, chunk, check_only=True) for index, chunk in enumerate(chunks()))
        async for _, prepared in self._in_order(tasks):
            for line, code, receipt, keys in zip(prepared.lines, prepared.resident_codes, prepared.receipts,
                                                 prepared.unique_keys, strict=True):
                for field, values in (("resident_code", (code,)), ("notification_id", (receipt,)),
                                      (key_field, keys)):
                    found = [value for value in values if value in wanted]
                    if any(value in first for value in found):
                        problems.append(RowProblem(line, field, "appears on an earlier line"))
                    first.update(found)
        self._invalid += len({problem.line for problem in problems})
        self._problems(problems)
        self._fail()


async def _rebuild(connection: asyncpg.Connection, plan: tables.Plan, loader: _Loader,
                   chunks: Callable[[], Iterator[Chunk]]) -> None:
    """Rebuild the keys and indexes (in a savepoint: a unique key that fails on rows repeating an earlier
    one leaves the load's transaction usable to find them, `_Loader.fail_on_repeats`)."""
    try:
        async with connection.transaction():
            await tables.rebuild_keys_and_indexes(connection, plan)
        return
    except asyncpg.UniqueViolationError:
        if not loader.repeats_in_database:
            raise
    # Outside the handler: PostgreSQL's message names the repeated value, which is never reported.
    await loader.fail_on_repeats(await tables.repeated_values(connection, plan), chunks)
    raise BulkLoadError("a unique key of the register refused the loaded rows; nothing was loaded")


def worker_count(path: Path, requested: int | None) -> int:
    """Worker processes for a file: as requested, else one per core unless the file is small."""
    if requested is not None:
        return max(requested, 0)
    return (os.cpu_count() or 1) if path.stat().st_size >= _SMALL_FILE else 0


async def load_file(owner_url: str, api: RegisterApi, path: Path, options: LoadOptions | None = None) -> LoadReport:
    """Load every row of `path` into the register of `api` as newly recorded persons (see the module
    docstring), connecting as the schema owner. Raises BulkLoadError (nothing written) when a row is bad
    and `skip_invalid` is off, FastModeRefused when fast mode was required for a non-empty register."""
    options = options or LoadOptions()
    if options.mode not in MODES:
        raise BulkLoadError(f"unknown mode; expected one of {', '.join(MODES)}")
    started = time.perf_counter()
    try:
        file_format = file_format_of(path, options.file_format)
        header = read_header(path) if file_format == "csv" else None
        if header is not None:
            CsvColumns(header, api.binding.record_type)  # a bad header fails before connecting
    except RecordFileError as error:
        raise BulkLoadError(str(error)) from None
    size, workers = await asyncio.to_thread(os.path.getsize, path), worker_count(path, options.workers)
    return_large_buffers()  # memory flat whatever the file size; the workers inherit it
    report = LoadReport()
    connection = await asyncpg.connect(owner_url)
    try:
        async with connection.transaction():
            plan = await tables.plan_and_lock(connection, api.engine.hooks, options)
            report.fast = plan.fast
            load_time: dt.datetime = await connection.fetchval("SELECT now()")
            preparer = ChunkPreparer(api, file_format=file_format, header=header, load_time=load_time,
                                     options=options)
            loader = _Loader(connection, preparer, plan=plan, options=options, report=report, bytes_total=size)
            chunks = functools.partial(read_chunks, path, options.chunk_bytes, 2 if header is not None else 1)
            try:
                loader.start(workers)
                await loader.run(chunks())
                await loader.finish(chunks)
                loader.close()
                await connection.execute(f"DROP TABLE {copy.STAGING}")
                report.stream_seconds = time.perf_counter() - started
                rebuilding = time.perf_counter()
                if plan.fast:
                    await _rebuild(connection, plan, loader, chunks)
                else:
                    await connection.execute(f"ANALYZE {', '.join(plan.filled)}")
            finally:
                loader.close()
            report.index_seconds = time.perf_counter() - rebuilding
            await copy.resolve_omissions(connection, load_time)
    finally:
        await connection.close()
    if report.resident_code_warnings:
        logger.warning("resident code check digit mismatches accepted (warn mode)",
                       extra={"count": report.resident_code_warnings})
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["FORMATS", "LOAD_DIGEST", "MODES", "BulkLoadError", "FastModeRefused", "LoadOptions", "LoadReport",
           "Progress", "RowProblem", "load_file", "record_dict", "worker_count"]
