"""Group commit for single notifications (ApplyNotification): many callers, few transactions.

Each unary ApplyNotification used to be its own transaction: seven round trips and a commit for
one row in each table. Under load (64 CSs sending at once) the service spent most of its time on
those round trips. `GroupCommit` lets concurrent callers share a transaction (`jukilib.batching.Batcher`): a caller
queues its notification and waits; a runner takes everything queued (at most `max_batch`) and applies it with
`RegisterEngine.apply_many`, which gives each notification exactly the answer `apply` would give it
(same idempotency, ordering, rules and rows). When the service is idle a notification is applied at
once, alone: nobody waits for a batch to fill. While one batch is in the database the next one
gathers, so the batch size follows the load by itself.

Nothing is lost or applied twice: a caller whose call is cancelled while its batch runs may find,
on resending, that the notification was applied; the receipt answers the resend with the stored
version, as for any repeat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from jukilib.batching import Batcher
from jukilib.errors import JukiError
from jukilib.register.model import Notification, StoredVersion

ApplyMany = Callable[[Sequence[Notification]], Awaitable[list[StoredVersion | JukiError]]]
MAX_BATCH = 128
"""Also OpenTelemetry's default limit of links per span: every call of a batch stays linked to it."""
RUNNERS = 1
"""Batches in the database at once: one committing while the next is written overlaps round trips;
more would only contend for the same rows and connections."""


class GroupCommit:
    """Applies single notifications in shared batches; one instance per register engine."""

    def __init__(self, apply_many: ApplyMany, *, max_batch: int = MAX_BATCH, runners: int = RUNNERS) -> None:
        self._batcher: Batcher[Notification, StoredVersion] = Batcher(
            apply_many, span_name="register.group_commit", max_batch=max_batch, runners=runners)

    async def apply(self, notification: Notification) -> StoredVersion:
        """The version `RegisterEngine.apply(notification)` would answer, or its error raised."""
        return await self._batcher.submit(notification)
