"""The feed of 修正 versions (ListModifications), shared by both registers.

The disclosure service follows it to tell every organ that received a value a municipality corrected
(住基法 30-35 follow-up; 12-5 reports resolved by a 修正 included). An entry names the version, the one before
it and the fields whose value changed: never a value.

Order: a version's place is the transaction that wrote it (`person_version.commit_xid`), then the person and
the version. The feed answers only versions of transactions older than every transaction still running
(`pg_snapshot_xmin`): a version committed after a reader moved past a position always comes after it, so a
reader that keeps its last token misses nothing. A transaction left open stops the feed until it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from juki.register.v1 import register_pb2 as pb
from jukilib import paging
from jukilib.db.pool import Database
from jukilib.register.hooks import RegisterHooks

_POSITION = ("xid", "person", "version")


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any], record_type: Any) -> list[str]:
    """The record field paths (`record.<field>`) whose value differs between two stored records, in the
    order of the record message's fields (`record_type`: its descriptor)."""
    return [f"record.{field.name}" for field in record_type.fields
            if before.get(field.name) != after.get(field.name)]


def _position(token: str) -> tuple[int, uuid.UUID, int]:
    position = paging.decode_token(token, keys=_POSITION)
    if position is None:
        return 0, uuid.UUID(int=0), 0
    try:
        person = uuid.UUID(str(position["person"]))
    except ValueError:
        raise paging.invalid_token() from None
    return paging.int_at(position, "xid"), person, paging.int_at(position, "version")


class Modifications:
    """ListModifications of one register."""

    def __init__(self, database: Database, collection: str, record_type: Any, hooks: RegisterHooks | None = None,
                 ) -> None:
        self._database = database
        self._collection = collection
        self._record_type = record_type
        self._hooks = hooks or RegisterHooks()

    async def list(self, size: int, token: str) -> tuple[list[pb.Modification], str]:
        limit = paging.page_size(size)
        xid, person, version = _position(token)
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT v.person_id, v.version, v.change_reason, v.record, v.created_at,
                           v.commit_xid::text::bigint AS xid,
                           (SELECT b.record FROM person_version b
                             WHERE b.person_id = v.person_id AND b.version < v.version
                             ORDER BY b.version DESC LIMIT 1) AS before,
                           (SELECT b.version FROM person_version b
                             WHERE b.person_id = v.person_id AND b.version < v.version
                             ORDER BY b.version DESC LIMIT 1) AS previous_version,
                           ARRAY(SELECT c.code FROM (
                                     SELECT p.resident_code AS code, 0 AS rank FROM person p WHERE p.id = v.person_id
                                     UNION SELECT h.resident_code, 1 FROM person_version h
                                      WHERE h.person_id = v.person_id) AS c
                                 GROUP BY c.code ORDER BY min(c.rank), c.code) AS codes,
                           ARRAY(SELECT r.id FROM municipality_report r
                                  WHERE r.person_id = v.person_id AND r.resolving_version = v.version
                                    AND r.outcome = {int(pb.REPORT_OUTCOME_CORRECTED)}
                                  ORDER BY r.id) AS reports
                    FROM person_version v
                    WHERE v.change_kind = {int(pb.CHANGE_KIND_MODIFY)}
                      AND (v.commit_xid, v.person_id, v.version) > ($1::text::xid8, $2::uuid, $3::bigint)
                      AND v.commit_xid < pg_snapshot_xmin(pg_current_snapshot())
                    ORDER BY v.commit_xid, v.person_id, v.version
                    LIMIT $4""",
                str(xid), person, version, limit)
            # What the register keeps apart (the 個人番号) is compared too: a corrected number is a changed field.
            kept = await self._hooks.kept_fields(connection, [
                *((row["person_id"], row["version"]) for row in rows),
                *((row["person_id"], row["previous_version"]) for row in rows if row["previous_version"])])
        entries = [self._message(row, kept) for row in rows]
        if not rows:
            return [], ""
        last = rows[-1]
        return entries, paging.encode_token({"xid": last["xid"], "person": str(last["person_id"]),
                                             "version": last["version"]})

    def _message(self, row: asyncpg.Record, kept: Mapping[tuple[Any, int], Mapping[str, Any]]) -> pb.Modification:
        person = f"{self._collection}/{row['person_id']}"
        before = {**(row["before"] or {}), **kept.get((row["person_id"], row["previous_version"]), {})}
        after = {**row["record"], **kept.get((row["person_id"], row["version"]), {})}
        entry = pb.Modification(
            name=f"{person}/versions/{row['version']}", person=person, version=row["version"],
            previous_version=row["previous_version"] or 0, reason=row["change_reason"],
            field_paths=changed_fields(before, after, self._record_type),
            municipality_reports=[f"municipalityReports/{r}" for r in row["reports"]], resident_codes=row["codes"])
        entry.create_time.FromDatetime(row["created_at"])
        return entry


