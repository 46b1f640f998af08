"""Preparing the chunks of a load, in worker processes: each row read, checked as the RPC path checks a
notification, decided by `jukilib.register.decide` as a 記載 of a new person, turned into rows by
`jukilib.register.rows` and encoded for COPY (`jukilib.register.load.copy`)."""

from __future__ import annotations

import datetime as dt
import functools
import gc
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from jukilib import bulkjson
from jukilib.collector import collect_young_rarely
from jukilib.domain import text
from jukilib.domain.dates import japan_date
from jukilib.recordfile import Chunk, FieldProblem, RowReader
from jukilib.register import rows, validation
from jukilib.register.api import RegisterApi
from jukilib.register.decide import NEW_PERSON, decide
from jukilib.register.load import copy
from jukilib.register.load.checks import ChangeChecks, MemoViolations
from jukilib.register.load.results import LoadOptions, RowProblem
from jukilib.register.model import Change, ChangeKind, Notification

# Receipts of loaded versions: there was no request, so no request hashes to this.
LOAD_DIGEST = hashlib.sha256(b"juki.register.bulk: recorded by the initial load, not by a notification").digest()


@dataclass(frozen=True)
class Task:
    index: int
    chunk: Chunk
    exclude: frozenset[int] = frozenset()
    """Lines to leave out (rows found bad by a later check, re-prepared under skip_invalid)."""
    check_only: bool = False
    """The load has failed already: check the rows, prepare nothing."""


@dataclass
class Prepared:
    index: int
    rows: int = 0
    """Rows seen (good and bad)."""
    lines: list[int] = field(default_factory=list)
    """Line of every prepared person, in order."""
    resident_codes: list[str] = field(default_factory=list)
    receipts: list[tuple[str, str]] = field(default_factory=list)
    """(municipality, notification id) of every prepared person."""
    unique_keys: list[tuple[bytes, ...]] = field(default_factory=list)
    """The unique keys of every prepared person (e.g. the keyed hash of the 個人番号)."""
    problems: list[RowProblem] = field(default_factory=list)
    invalid: int = 0
    secrets_kept: int = 0
    code_warnings: int = 0
    encoded: copy.Encoded = field(default_factory=copy.Encoded)
    cpu_seconds: float = 0.0


class ChunkPreparer:
    """Turns chunks of the file into COPY text for the engine's tables and the hooks' tables."""

    def __init__(self, api: RegisterApi, *, file_format: str, header: list[str] | None, load_time: dt.datetime,
                 options: LoadOptions) -> None:
        self._api = api
        self._binding = api.binding
        self._hooks = api.engine.hooks
        self._reader = RowReader(api.binding.record_type, file_format, header)
        self._load_time = load_time
        self._options = options
        self._violations = MemoViolations()
        self._changes = ChangeChecks(japan_date(load_time))
        # Names and readings repeat across the file: their search keys (a pure function) are remembered.
        self._search_key = functools.lru_cache(maxsize=1 << 17)(text.search_key)

    @property
    def register(self) -> str:
        return self._binding.register

    @property
    def unique_key_field(self) -> str:
        """The record field of the register's unique key (e.g. individual_number), in row problems."""
        rule = self._hooks.unique_key
        return "unique_key" if rule is None else rule.name.lower()

    @property
    def hooks_have_tables(self) -> bool:
        """Whether what the hooks keep apart from records has somewhere to go in a load."""
        return bool(self._hooks.table_names)

    def prepare(self, task: Task) -> Prepared:
        started = time.process_time()
        result = Prepared(task.index)
        notifications: list[Notification] = []
        prepare, unique_keys, key_of = self._hooks.prepare, self._hooks.unique_keys, self._search_key
        search_keys, check_change, validate = self._api.search_keys, self._changes.check, self._validate
        unidentified, text_fields = validation.unidentified_fields, self._binding.text_fields
        load_time, municipality_field = self._load_time, self._binding.municipality_field
        lines, codes, receipts, all_keys = result.lines, result.resident_codes, result.receipts, result.unique_keys
        for line, record, stored, meta, problems in self._reader.rows(task.chunk, task.exclude):
            result.rows += 1
            event_date, reason, change_problems = check_change(meta)
            notification_id = meta.get("notification_id") if meta else None
            if change_problems or notification_id is not None:
                problems.extend(change_problems)
                problems.extend(self._notification_id_problems(notification_id))
            if notification_id is None:
                notification_id = f"{self._options.id_prefix}{line}"
            if record is not None:
                problems.extend(validate(record))
            if problems or record is None or stored is None:
                result.invalid += 1
                result.problems.extend(RowProblem(line, name, what) for name, what in problems)
                del result.problems[self._options.max_problems:]
                continue
            municipality, resident_code = getattr(record, municipality_field), record.resident_code
            lines.append(line)
            codes.append(resident_code)
            receipts.append((municipality, notification_id))
            engine_record, secret = prepare(stored)
            keys = unique_keys(secret)
            all_keys.append(keys)
            if not task.check_only:
                # The 記載 the row stands for, notified by the record's municipality at the load's time.
                change = Change(ChangeKind.RECORD, reason, event_date, load_time, load_time, municipality,
                                notification_id)
                notifications.append(Notification(change, resident_code, engine_record, LOAD_DIGEST,
                                                  search_keys(stored, key_of), None, secret, keys,
                                                  unidentified(stored, text_fields)))
        result.code_warnings = len(self._violations.warnings)
        self._violations.warnings.clear()
        if notifications:
            result.encoded, result.secrets_kept = self._encode(notifications)
        result.cpu_seconds = time.process_time() - started
        return result

    @staticmethod
    def _notification_id_problems(notification_id: Any) -> list[FieldProblem]:
        """A row's own notification id, checked as the RPC path checks one (None: the row has none)."""
        if notification_id is None:
            return []
        if not isinstance(notification_id, str):
            return [("notification_id", "must be a string")]
        return [("notification_id", problem) for problem in validation.notification_id_problems(notification_id)]

    def _validate(self, record: Any) -> list[FieldProblem]:
        violations = self._violations
        violations.items = []
        municipality = getattr(record, self._binding.municipality_field)  # the record's is the notifying one
        violations.resident_code("record.resident_code", record.resident_code, self._api.resident_code_check)
        self._binding.validate_record(record, violations, self._api.municipalities, municipality)
        return [(item.field.removeprefix("record."), item.description) for item in violations.items]

    def _encode(self, notifications: list[Notification]) -> tuple[copy.Encoded, int]:
        """The notifications decided as what they are, a 記載 each of a person not in the file (as the RPC
        path decides them), as rows for COPY; with how many had something kept apart by the hooks."""
        rule = self._hooks.unique_key
        decisions = [decide(notification, None, NEW_PERSON, person_id, rule=rule)
                     for person_id, notification in zip(new_ids(len(notifications)), notifications, strict=True)]
        kept = [rows.Kept(d.person_id, 1, d.notification.secret)
                for d in decisions if d.notification.secret]
        built = rows.build(decisions, self.register, self._hooks.rows(kept) if kept else [],
                           outbox=self._options.forward, dumps=bulkjson.dumps)
        return copy.encode(built), len(kept)


def new_ids(count: int) -> list[str]:
    """Random (version 4) UUIDs like `uuid.uuid4()`, as canonical text, from one read of the system's
    random source. Text, not `uuid.UUID`: the load only writes the ids, into four tables' COPY text."""
    raw = os.urandom(16 * count).hex()
    ids = []
    for start in range(0, 32 * count, 32):
        hexa = raw[start:start + 32]
        # RFC 9562: version 4 in the 13th digit, variant 10 in the top bits of the 17th.
        ids.append(f"{hexa[:8]}-{hexa[8:12]}-4{hexa[13:16]}-{_VARIANT[hexa[16]]}{hexa[17:20]}-{hexa[20:]}")
    return ids


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


_INSTALLED: list[ChunkPreparer] = []


def install(preparer: ChunkPreparer) -> None:
    """Worker initialiser (fork: the preparer is inherited, not pickled). A worker makes millions of
    short-lived acyclic objects (freed by reference counting) while holding large long-lived memos:
    what it inherited is frozen out of the collector, and collections run far less often."""
    _INSTALLED[:] = [preparer]
    gc.freeze()
    collect_young_rarely()


def prepare_installed(task: Task) -> Prepared:
    return _INSTALLED[0].prepare(task)
