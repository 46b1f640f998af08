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

Fast mode (the default when the register is empty) drops the tables' keys and indexes and rebuilds
them after (`tables`), in the load's transaction: a failure anywhere leaves the register as it was. Rows
are prepared in worker processes while the main process streams finished chunks to PostgreSQL, in
file order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import asyncpg

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


class _Loader:
    """Streams prepared chunks into the database in file order, keeping a few chunks in preparation."""

    def __init__(self, connection: asyncpg.Connection, preparer: ChunkPreparer, *, plan: tables.Plan,
                 options: LoadOptions, report: LoadReport, bytes_total: int) -> None:
        self._connection = connection
        self._preparer = preparer
        self._plan = plan
        self._options = options
        self._report = report
        self._seen: set[object] = set()
        """住民票コード (str), receipts (tuples) and unique keys (bytes) of the rows so far: distinct types."""
        self._invalid = 0
        self._rows = 0
        self._failed = False
        self._started = time.perf_counter()
        self._bytes_total = bytes_total
        self._executor: ProcessPoolExecutor | None = None

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

    async def run(self, chunks: Iterator[Chunk], workers: int) -> None:
        if workers:
            self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                 initializer=install, initargs=(self._preparer,))
        try:
            window: deque[tuple[Task, asyncio.Future[Prepared]]] = deque()
            for index, chunk in enumerate(chunks):
                task = Task(index, chunk, check_only=self._failed)
                window.append((task, self._submit(task)))
                if len(window) > max(2 * workers, 1):
                    await self._handle(*window.popleft())
            while window:
                await self._handle(*window.popleft())
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)

    async def _handle(self, task: Task, pending: asyncio.Future[Prepared]) -> None:
        prepared = await pending
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
        if not self._failed and prepared.lines:
            await copy.write(self._connection, prepared.encoded)
            self._report.persons += len(prepared.lines)
        self._report.database_seconds += time.perf_counter() - writing
        self._progress(task.chunk.offset)

    def _duplicates(self, prepared: Prepared) -> list[RowProblem]:
        """Rows that repeat an earlier row's 住民票コード, notification id or unique key (a later notification
        would be refused as ALREADY_RECORDED, NOTIFICATION_ID_REUSED or <KEY>_IN_USE); the first stays."""
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

    def finish(self) -> None:
        if self._invalid and not self._options.skip_invalid:
            raise BulkLoadError(f"{self._invalid} of {self._rows} rows are invalid; nothing was loaded",
                                self._report.problems, self._invalid)
        self._report.skipped = self._invalid


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
            await loader.run(read_chunks(path, options.chunk_bytes, 2 if header is not None else 1), workers)
            loader.finish()
            await connection.execute(f"DROP TABLE {copy.STAGING}")
            report.stream_seconds = time.perf_counter() - started
            rebuilding = time.perf_counter()
            if plan.fast:
                await tables.rebuild_keys_and_indexes(connection, plan)
            else:
                await connection.execute(f"ANALYZE {', '.join(plan.filled)}")
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
