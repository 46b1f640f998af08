"""Notices to the organs that received a value a municipality's 修正 corrected (住基法 30-35 follow-up).

A correction case tells the organs itself when the municipality's 修正 resolves its 12-5 report
(`Desk._complete`), of the fields the report named. Every other correction of a value an organ received must
reach it too: any other field that 修正 changed, the municipality's own 誤記修正 or 職権修正, and the 修正
answering a 12-5 report of the prefecture or of the agency (30-8). The registers list their 修正 versions in
commit order (ListModifications, jukilib.register.modifications); this follower reads that feed through the
gateway (ORGAN-NOTICE-FEED) and, for each 修正 that corrects a value, under its own purpose (ORGAN-NOTICE-30-35,
case reference: the follow-up's own open `organNotifications/{id}`):

- finds the person's history (every 住民票コード they have had, 30-4) and every provision of the person under
  any of them (the gateway's operation log),
- matches them against the value the 修正 replaced (`corrections.wrong_value_recipients`, the same rule as the
  correction case), and
- issues to each organ that received it the same notice as a correction case does, naming the person only by
  what that organ received (`notices.recipient_notice`).

Restart-safe and idempotent across replicas: the feed position is kept in `modification_cursor` (moved after
each page); each (file, person, version) is opened once in `organ_notification` (unique), the follow-up's own
case, open while its reads are made (the gateway admits them only for an open case), and closed in the
transaction that issues its notices: a replica that finds it closed issues nothing, a page read again after a
restart finishes what was left open.

Both files are followed. The annex file's answers never carry a 住民票コード (30-44-6), so the feed itself names
every code the person has had in the file (`Modification.resident_codes`): the provisions are found in the log
under them (the gateway logs an annex answer under the codes the register answered, though it strips them),
and the notice's reads are logged under the current one. That one answer is the prefecture's own follow-up of
its file (30-44-13 applies 30-35), to its own disclosure service, never a provision to an organ; an organ
that received annex data is named in its notice only by what it received (never a 住民票コード).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from google.protobuf import json_format

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki.register.v1 import register_pb2
from juki_services.disclosure import corrections, notices, store
from juki_services.disclosure.records import ANNEX, IDENTITY, ORGAN_NOTICE_PURPOSE, Records
from jukilib.db.pool import Database

logger = logging.getLogger(__name__)

FOLLOWED_FILES: dict[int, str] = {pb.RECORD_FILE_IDENTITY: IDENTITY, pb.RECORD_FILE_ANNEX: ANNEX}
"""The files whose 修正 are followed."""

R = register_pb2
UNSEEN_FIELDS = frozenset({"record.individual_number"})
"""Fields the feed compares (the register keeps the 個人番号 apart) but this service never reads (番号法 19): a
change the feed names is taken as it is."""
CORRECTING_REASONS = frozenset({
    R.CHANGE_REASON_CLERICAL_ERROR_CORRECTION,  # 誤記修正
    R.CHANGE_REASON_EX_OFFICIO_CORRECTION,  # 職権修正
    R.CHANGE_REASON_MINOR_CORRECTION,  # 軽微な修正
    R.CHANGE_REASON_CANCELLATION_MODIFY,  # 異動の取消し(修正): the change cancelled was wrong
    R.CHANGE_REASON_INDIVIDUAL_NUMBER_EX_OFFICIO_CORRECTION,  # 個人番号の職権修正 (番号法 7 ②): the number was wrong
})
"""修正 reasons that replace a wrong value. A 転居, a change of 旧氏 or 通称, a new 住民票コード or 個人番号 on
request replace a value that was right when it was provided: no organ received a wrong value."""

_NAMESPACE = uuid.UUID("4b1f3c0e-6a43-5b8e-9c55-0d7e1f2a9b61")


def corrects(modification: Any, reasons: frozenset[int] = CORRECTING_REASONS) -> bool:
    """住基法 30-35: whether a 修正 corrected a wrong value: its reason says so, or it closed a 12-5 report as
    corrected (whatever reason the municipality gave)."""
    return bool(modification.field_paths) and (modification.reason in reasons
                                               or bool(modification.municipality_reports))


def notification_id(file: int, version_name: str) -> uuid.UUID:
    """One id per (file, version), the same on every replica and every retry: the follow-up's case reference."""
    return uuid.uuid5(_NAMESPACE, f"{file}:{version_name}")


@dataclasses.dataclass(frozen=True)
class Subject:
    """What `notices.recipient_notice` reads of the case: its reference and the person's code."""

    name: str
    subject_resident_code: str


def _fields_of(version: Any, paths: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = json_format.MessageToDict(version.record, always_print_fields_with_no_presence=True)
    wanted = {notices.camel(path) for path in paths}
    return {key: value for key, value in record.items() if key in wanted}


class OrganNotices:
    """One pass over each followed register's feed of 修正; the notices issued through the desk (文書番号)."""

    def __init__(self, database: Database, records: Records, desk: Any, *,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 reasons: frozenset[int] = CORRECTING_REASONS, page_size: int = 50) -> None:
        self._database = database
        self._records = records
        self._desk = desk  # Desk.issue: numbered, sealed notices
        self._clock = clock
        self._reasons = reasons
        self._page_size = page_size

    @property
    def page_size(self) -> int:
        return self._page_size

    async def follow(self) -> int:
        """One page of each followed file's feed; returns the most 修正 one page held (a full page: more wait)."""
        read = 0
        for file in FOLLOWED_FILES:
            read = max(read, await self.follow_file(file))
        return read

    async def follow_file(self, file: int) -> int:
        """One page of the file's feed, each 修正 handled, then the position kept; returns how many it held."""
        async with self._database.connection() as connection:
            token = await store.modification_cursor(connection, file)
        page = await self._records.modifications(FOLLOWED_FILES[file], token, f"modifications/{FOLLOWED_FILES[file]}",
                                                 self._page_size)
        for modification in page.modifications:
            await self.handle(file, modification)
        if page.next_page_token:
            async with self._database.connection() as connection:
                await store.move_modification_cursor(connection, file, page.next_page_token)
        return len(page.modifications)

    async def handle(self, file: int, modification: Any) -> int:
        """Notify every organ that received a value this 修正 corrected, once; returns the notices issued."""
        if not corrects(modification, self._reasons):
            return 0
        new = store.NewOrganNotification(
            id=notification_id(file, modification.name), file=file, person=modification.person,
            version=modification.version, previous_version=modification.previous_version,
            field_paths=list(modification.field_paths))
        async with self._database.connection() as connection:
            opened = await store.open_organ_notification(connection, new)
            if opened["state"] != store.ORGAN_FOLLOWING:
                return 0  # done before (a page read again after a restart, another replica)
            handling = await store.correction_case_of_reports(connection, list(modification.municipality_reports))
        # A correction case whose report this 修正 closed tells the organs of the fields it reported; the others
        # the 修正 changed are told here. Never the same field twice.
        handling_case, handled_fields = handling if handling is not None else (None, [])
        fields = [f for f in modification.field_paths if f not in handled_fields]
        # The follow-up's own case, open while it reads: the gateway admits its reads only for it (issue 19).
        reference = f"organNotifications/{opened['id']}"
        name = FOLLOWED_FILES[file]
        history = await self._records.person_versions(name, modification.person, reference)
        corrected_version = next((v for v in history.versions if v.version == modification.version), None)
        # The feed names the person's codes (the annex file's versions never do): the current one first.
        codes = list(dict.fromkeys([*modification.resident_codes, *history.resident_codes("")]))
        subject = codes[0] if codes else ""
        recipients: list[dict[str, Any]] = []
        drafts: list[notices.Draft] = []
        if fields and corrected_version is not None:  # None: purged meanwhile, nothing left to compare
            # Every organ given the wrong value, under whichever 住民票コード the person had then (30-4).
            provisions = await self._records.provisions(codes, reference, ORGAN_NOTICE_PURPOSE)
            recipients = corrections.wrong_value_recipients(
                name, history.versions, wrong=modification.previous_version, resolving=modification.version,
                fields=fields, provisions=provisions, unseen=UNSEEN_FIELDS)
            corrected = _fields_of(corrected_version, fields)
            now = self._clock()
            drafts = [notices.recipient_notice(Subject(reference, subject), r, corrected, now) for r in recipients]
        return await self._complete(opened["id"], subject, [r["organization"] for r in recipients], handling_case,
                                    drafts)

    async def _complete(self, identifier: uuid.UUID, subject: str, recipients: list[str],
                        handling_case: uuid.UUID | None, drafts: list[notices.Draft]) -> int:
        async def work(connection: asyncpg.Connection) -> int:
            if not await store.complete_organ_notification(connection, identifier, subject_resident_code=subject,
                                                           recipients=recipients, correction_case_id=handling_case):
                return 0  # another replica finished this 修正
            for draft in drafts:
                await self._desk.issue(connection, "organ", identifier, draft)
            return len(drafts)

        issued: int = await self._database.run_in_transaction(work, retry_on=(asyncpg.SerializationError,))
        if issued:
            logger.info("organs notified of a correction", extra={"notices": issued})
        return issued

    async def list(self, before: tuple[dt.datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
        async with self._database.connection() as connection:
            return await store.list_organ_notifications(connection, before, limit)


def notification_message(row: asyncpg.Record) -> pb.OrganNotification:
    file = "identity" if row["file"] == pb.RECORD_FILE_IDENTITY else "annex"
    message = pb.OrganNotification(
        name=f"organNotifications/{row['id']}", file=row["file"],
        version=f"{file}:{row['person']}/versions/{row['version']}",
        previous_version=f"{file}:{row['person']}/versions/{row['previous_version']}",
        field_paths=row["field_paths"], recipients=row["recipients"], documents=row["documents"],
        subject_resident_code=row["subject_resident_code"])
    message.create_time.FromDatetime(row["create_time"])
    return message
