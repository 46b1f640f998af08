"""StreamNotifications: a municipality's backlog over one stream, applied in batches.

The client sends request messages carrying 1 to `MAX_PER_MESSAGE` notifications each (a chunk of the
backlog: each message costs the stream the same whatever it carries, so chunks are what makes a
stream fast). A reader task takes messages off the stream as they come; the handler groups whatever
has arrived (about `MAX_BATCH` notifications at most, never waiting for more once the reader has
nothing) into a batch, validates each notification as ApplyNotification would
(`RegisterApi.notification`), applies the valid ones with `RegisterEngine.apply_many` and answers
every request message, in stream order, with one response holding each notification's outcome: its
index in the stream and either the version or the `google.rpc.Status` ApplyNotification would have
answered. A message without notifications, or with too many, ends the stream with INVALID_ARGUMENT
naming `notifications`, one that cannot be decoded with INVALID_ARGUMENT naming `request`, each after
the answers to everything before it.

Up to `_IN_FLIGHT` batches may be in the database at once, each in its own transaction: while one
waits for PostgreSQL the service works on another, so that neither the service nor the database
waits for the other (one at a time, each was idle about half of the time). A batch is applied as if
after the one before it in the stream:
- the next batch starts only once the one before holds the row locks of the stored persons it names
  (`RegisterEngine.apply_many(on_locked=...)`): a person both name is then changed by the earlier
  batch first, and the later one, waiting on the lock, sees what it did;
- a batch that names a 住民票コード or a notification id that a batch in the database names waits for
  that batch to commit before it starts: a person the earlier batch records (記載) is not in the
  database until then, and only its codes find it; a notification id, only its receipt.
(A batch that lost a race with another writer is retried whole and takes its locks again; the next
batch may then have taken a common person's lock first, as if it had arrived first.)

Answers go out in stream order as each batch commits; meanwhile the next messages are read and
validated. The handler never holds answers back waiting for more requests, so a client that waits
for answers before sending more is served too. Read-ahead is bounded by the notifications it holds
(`_READ_AHEAD_BATCHES` batches), whatever the chunk size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from jukilib.errors import FieldViolation, InvalidArgument, JukiError, log_unexpected, to_status, translate
from jukilib.register.api import RegisterApi
from jukilib.register.model import Notification, StoredVersion

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_PER_MESSAGE = 1000
_READ_AHEAD_BATCHES = 4
_IN_FLIGHT = 3
"""Batches in the database at once, each on its own connection (one at a time is 40-50 % slower, two
about 10 %: a batch alternates between the service's work and PostgreSQL's, the others fill the gaps)."""
_SPARE_CONNECTIONS = 2
"""A batch starts beside others only while the pool has this many connections free: one for it, one
left for the rest of the service (a stream never takes the pool's last connection)."""


class _End:
    """The client closed its side of the stream."""


@dataclass(frozen=True)
class _ReadFailed:
    error: BaseException


class _ReadAhead:
    """Request messages read but not yet taken, bounded by the notifications they carry (one reader)."""

    def __init__(self, limit: int) -> None:
        self._items: deque[tuple[Any, int]] = deque()
        self._held = 0
        self._limit = limit
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()

    async def put(self, item: Any, weight: int = 0) -> None:
        while self._held >= self._limit:
            self._room.clear()
            await self._room.wait()
        self._items.append((item, weight))
        self._held += weight
        self._arrived.set()

    async def get(self) -> tuple[Any, int]:
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        return self.get_nowait()

    def get_nowait(self) -> tuple[Any, int]:
        item, weight = self._items.popleft()
        self._held -= weight
        if self._held < self._limit:
            self._room.set()
        return item, weight

    def empty(self) -> bool:
        return not self._items


@dataclass
class _Prepared:
    """A batch read and validated: its first index, the size of each request message, early answers
    (invalid notifications) and the notifications to apply with their positions."""

    first_index: int
    message_sizes: list[int]
    errors: dict[int, JukiError] = field(default_factory=dict)
    positions: list[int] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(self.message_sizes)

    def names(self) -> set[object]:
        """The 住民票コード (current and previous) and (municipality, notification id) it names."""
        named: set[object] = set()
        for notification in self.notifications:
            change = notification.change
            named.update((notification.resident_code, (change.municipality_code, change.notification_id)))
            if notification.previous_resident_code:
                named.add(notification.previous_resident_code)
        return named


@dataclass
class _InFlight:
    """A batch in the database: its outcomes to come, whether it holds its persons' locks yet."""

    prepared: _Prepared
    names: set[object]
    task: asyncio.Task[list[StoredVersion | JukiError]] | None
    locked: asyncio.Event


async def stream_notifications(
    api: RegisterApi, requests: AsyncIterator[Any], response_type: Callable[..., Any], version_field: str,
    municipality: str, *, max_batch: int = MAX_BATCH,
) -> AsyncIterator[Any]:
    """Answers of `StreamNotifications` notified by `municipality`: one `response_type` per request message,
    its `outcomes` each `(index=..., <version_field>=... | error=...)`."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    backlog = _ReadAhead(max_batch * _READ_AHEAD_BATCHES)
    reader = asyncio.create_task(_read(requests, backlog), name="stream-notifications-reader")
    in_flight: deque[_InFlight] = deque()
    next_index = 0
    ended = False
    failure: BaseException | None = None
    try:
        while True:
            if in_flight and (ended or backlog.empty() or len(in_flight) == _IN_FLIGHT):
                # Nothing more to start now: answer the oldest batch once it committed.
                for answer in await _finish(api, in_flight.popleft(), response_type, version_field):
                    yield answer
                continue
            if ended:
                break
            messages, ended, failure = await _take(backlog, max_batch)
            prepared = _prepare(api, messages, next_index, municipality)
            next_index += prepared.size
            names = prepared.names()
            while in_flight and (any(names & batch.names for batch in in_flight)
                                 or api.engine.database.spare_connections() < _SPARE_CONNECTIONS):
                for answer in await _finish(api, in_flight.popleft(), response_type, version_field):
                    yield answer
            if in_flight:
                await in_flight[-1].locked.wait()
            in_flight.append(_start(api, prepared, names))
        if failure is not None:  # reading the stream failed after what was answered
            raise failure
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        for batch in in_flight:
            if batch.task is not None:
                batch.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await batch.task


def _start(api: RegisterApi, prepared: _Prepared, names: set[object]) -> _InFlight:
    locked = asyncio.Event()
    if not prepared.notifications:  # every notification was refused at the boundary
        locked.set()
        return _InFlight(prepared, names, None, locked)
    task = asyncio.create_task(api.engine.apply_many(prepared.notifications, on_locked=locked.set))
    return _InFlight(prepared, names, task, locked)


async def _finish(api: RegisterApi, batch: _InFlight, response_type: Callable[..., Any],
                  version_field: str) -> list[Any]:
    outcomes = await batch.task if batch.task is not None else []
    return _answers(api, batch.prepared, outcomes, response_type, version_field)


async def _read(requests: AsyncIterator[Any], backlog: _ReadAhead) -> None:
    try:
        async for request in requests:
            count = len(request.notifications)
            if not 1 <= count <= MAX_PER_MESSAGE:
                raise InvalidArgument([FieldViolation(
                    "notifications", f"a message carries 1 to {MAX_PER_MESSAGE} notifications")])
            await backlog.put(request, count)
    except DecodeError:  # gRPC decodes each message as the handler reads it: bad bytes end the stream here
        await backlog.put(_ReadFailed(InvalidArgument([FieldViolation("request", "is not a valid encoded message")])))
        return
    except Exception as exc:
        await backlog.put(_ReadFailed(exc))
        return
    await backlog.put(_End())


async def _take(backlog: _ReadAhead, max_batch: int) -> tuple[list[Any], bool, BaseException | None]:
    """The messages that have arrived (waiting for the first only), about `max_batch` notifications at
    most; whether the stream ended; why reading it failed, if it did."""
    taken: list[Any] = []
    carried = 0
    item, weight = await backlog.get()
    while True:
        if isinstance(item, _End):
            return taken, True, None
        if isinstance(item, _ReadFailed):
            return taken, True, item.error
        taken.append(item)
        carried += weight
        if carried >= max_batch or backlog.empty():
            return taken, False, None
        item, weight = backlog.get_nowait()


def _prepare(api: RegisterApi, messages: list[Any], first_index: int, municipality: str) -> _Prepared:
    prepared = _Prepared(first_index, [len(m.notifications) for m in messages])
    position = 0
    for message in messages:
        for request in message.notifications:
            try:
                prepared.notifications.append(api.notification(request, municipality))
                prepared.positions.append(position)
            except JukiError as error:
                prepared.errors[position] = error
            except Exception as exc:
                log_unexpected("StreamNotifications", exc)
                prepared.errors[position] = translate(exc)
            position += 1
    return prepared


def _answers(api: RegisterApi, prepared: _Prepared, outcomes: list[StoredVersion | JukiError],
             response_type: Callable[..., Any], version_field: str) -> list[Any]:
    """One response per request message of the batch, each built by one constructor call."""
    results: dict[int, StoredVersion | JukiError] = dict(prepared.errors)
    results.update(zip(prepared.positions, outcomes, strict=True))

    def outcome(position: int, checked: bool) -> dict[str, Any]:
        result, index = results[position], prepared.first_index + position
        if isinstance(result, JukiError):
            return {"index": index, "error": to_status(result)}
        return {"index": index, version_field: api.version_fields(result, checked=checked)}

    def answer(positions: range) -> Any:
        return api.construct(lambda checked: response_type(
            outcomes=[outcome(position, checked) for position in positions]))

    answers = []
    start = 0
    for size in prepared.message_sizes:
        answers.append(answer(range(start, start + size)))
        start += size
    return answers
