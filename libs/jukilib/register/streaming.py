"""StreamNotifications: a municipality's backlog over one stream, applied in batches.

A reader task takes requests off the stream as they come; the handler groups whatever has arrived
(at most `MAX_BATCH`, never waiting for more once the reader has nothing) into a batch, validates
each request as ApplyNotification would (`RegisterApi.notification`), applies the valid ones with
`RegisterEngine.apply_many` and answers every request, in stream order, with its index and either
the version or the `google.rpc.Status` ApplyNotification would have answered.

Batches are applied one after the other (a batch starts after the previous one committed), but the
work around them overlaps: while a batch is in the database, the next one is read and validated and
the answers of the one before are sent. The handler never holds answers back waiting for more
requests, so a client that waits for answers before sending more is served too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from jukilib.errors import FieldViolation, InvalidArgument, JukiError, to_status
from jukilib.grpc.interceptors import log_unexpected, translate
from jukilib.register.api import RegisterApi
from jukilib.register.model import Notification, StoredVersion

logger = logging.getLogger(__name__)

MAX_BATCH = 500
_QUEUE_BATCHES = 4


class _End:
    """The client closed its side of the stream."""


@dataclass(frozen=True)
class _ReadFailed:
    error: BaseException


@dataclass
class _Prepared:
    """A batch read and validated: its first index, early answers (invalid requests) and the rest."""

    first_index: int
    size: int
    errors: dict[int, JukiError]
    positions: list[int]
    notifications: list[Notification]


async def stream_notifications(
    api: RegisterApi, requests: AsyncIterator[Any], response_type: Callable[..., Any], version_field: str,
    *, max_batch: int = MAX_BATCH,
) -> AsyncIterator[Any]:
    """Answers of `StreamNotifications`: `response_type(index=..., <version_field>=... | error=...)`."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_batch * _QUEUE_BATCHES)
    reader = asyncio.create_task(_read(requests, queue), name="stream-notifications-reader")
    in_flight: tuple[_Prepared, asyncio.Task[list[StoredVersion | JukiError]] | None] | None = None
    next_index = 0
    ended = False
    failure: BaseException | None = None
    try:
        while True:
            if in_flight is not None and (ended or queue.empty()):
                # Nothing more to prepare now: answer what is in the database first.
                prepared, task = in_flight
                in_flight = None
                for answer in _answers(api, prepared, await task if task else [], response_type, version_field):
                    yield answer
                continue
            if ended:
                break
            requests_now, ended, failure = await _take(queue, max_batch)
            prepared = _prepare(api, requests_now, next_index)
            next_index += prepared.size
            previous = in_flight
            outcomes = (await previous[1] if previous[1] else []) if previous is not None else []
            # Batches apply one after the other; the answers of the previous one go out meanwhile.
            task = (asyncio.create_task(api.engine.apply_many(prepared.notifications))
                    if prepared.notifications else None)
            in_flight = (prepared, task)
            if previous is not None:
                for answer in _answers(api, previous[0], outcomes, response_type, version_field):
                    yield answer
        if failure is not None:  # reading the stream failed after what was answered
            raise failure
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        if in_flight is not None and in_flight[1] is not None:
            in_flight[1].cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await in_flight[1]


async def _read(requests: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
    try:
        async for request in requests:
            await queue.put(request)
    except Exception as exc:
        await queue.put(_ReadFailed(exc))
        return
    await queue.put(_End())


async def _take(queue: asyncio.Queue[Any], max_batch: int) -> tuple[list[Any], bool, BaseException | None]:
    """What has arrived (waiting for the first only), at most `max_batch`; whether the stream ended;
    why reading it failed, if it did."""
    taken: list[Any] = []
    item = await queue.get()
    while True:
        if isinstance(item, _End):
            return taken, True, None
        if isinstance(item, _ReadFailed):
            return taken, True, item.error
        taken.append(item)
        if len(taken) >= max_batch or queue.empty():
            return taken, False, None
        item = queue.get_nowait()


def _prepare(api: RegisterApi, requests: list[Any], first_index: int) -> _Prepared:
    prepared = _Prepared(first_index, len(requests), {}, [], [])
    for position, request in enumerate(requests):
        try:
            if not request.HasField("notification"):
                raise InvalidArgument([FieldViolation("notification", "is required", "REQUIRED_FIELD")])
            prepared.notifications.append(api.notification(request.notification))
            prepared.positions.append(position)
        except JukiError as error:
            prepared.errors[position] = error
        except Exception as exc:
            log_unexpected("StreamNotifications", exc)
            prepared.errors[position] = translate(exc)
    return prepared


def _answers(api: RegisterApi, prepared: _Prepared, outcomes: list[StoredVersion | JukiError],
             response_type: Callable[..., Any], version_field: str) -> list[Any]:
    results: dict[int, StoredVersion | JukiError] = dict(prepared.errors)
    results.update(zip(prepared.positions, outcomes, strict=True))
    answers = []
    for position in range(prepared.size):
        outcome = results[position]
        answer = response_type(index=prepared.first_index + position)
        if isinstance(outcome, JukiError):
            answer.error.CopyFrom(to_status(outcome))
        else:
            getattr(answer, version_field).CopyFrom(api.version_message(outcome))
        answers.append(answer)
    return answers
