"""The register's rules, once: where a notification falls in a person's history and what it does there.

Pure: no I/O. Every write of a register — a single notification, a group commit, a stream, the initial
load — decides each notification here (`decide`, with `Ledger` carrying what earlier decisions of the
same batch changed), then writes what `jukilib.register.rows` builds from the decisions.

Ordering: a person's versions are ordered by (event date, notification time, municipality, notification
id). A late notification takes its place in history and does not overwrite newer current data. It is
checked against the state just before its place only: checking it against the change after it as well
can deadlock (a late 消除 and the 記載 that follows it would each wait for the other; the ordering
property test found exactly that). With the check against what precedes, a notification is accepted as
soon as everything before it has arrived, so applying a person's notifications in any order (a CS
resending what was refused) ends in the same current record and the same history.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

from juki.register.v1 import register_pb2
from jukilib.errors import FailedPrecondition
from jukilib.register.model import Change, ChangeKind, Notification, OrderKey, PersonId, RecordState, UniqueKey

MOVE_IN = register_pb2.CHANGE_REASON_DOMESTIC_MOVE_IN  # 国内転入


@dataclass
class Person:
    """A person as the decisions so far have left them."""

    id: PersonId
    resident_code: str
    """The current 住民票コード."""
    last_version: int
    newest: tuple[OrderKey, RecordState] | None
    """Order key and state of the newest version in event order (the current one); None for a new person."""
    stored: bool
    """Whether the person was in the file before this batch (else the batch records them)."""
    keys: frozenset[bytes] = frozenset()
    """The unique keys of the current record (`Notification.unique_keys`)."""
    decided: list[tuple[OrderKey, RecordState, ChangeKind]] = field(default_factory=list)
    """Versions decided in this batch, in decision order."""
    awaited: str | None = None
    """The municipality whose 転出 a 転入 recorded while it held the person awaits (`Decision.move_from`)."""


class Neighbours(NamedTuple):
    """Where an order key falls among a person's versions."""

    before: RecordState | None
    """State of the version just before it (None: nothing before)."""
    newest: bool
    """Nothing comes after it: the notification becomes the current record."""
    holder: str | None = None
    """The municipality that notified the version just before it: the one that held the person then."""
    after: ChangeKind | None = None
    """The kind of change of the version just after it (None: nothing after)."""
    before_day: date | None = None
    """The event date of the version just before it."""


NEW_PERSON = Neighbours(None, True)
"""Where the first notification of a person falls."""


class StoredNeighbour(NamedTuple):
    """A stored version next to a late notification's place (`store.neighbours`)."""

    key: OrderKey
    state: RecordState


class StoredFollower(NamedTuple):
    """The stored version just after a late notification's place (`store.neighbours`)."""

    key: OrderKey
    kind: ChangeKind


class Decision(NamedTuple):
    """What one accepted notification does (a named tuple: a load makes millions)."""

    notification: Notification
    person_id: PersonId
    version: int
    state: RecordState
    becomes_current: bool
    """The newest in event order: it replaces the current record. Else a late version, kept in history."""
    new_person: bool
    former_code: str | None
    """A 住民票コード that becomes a former code of the person (lookups by it keep finding them)."""
    keys_changed: bool = False
    """It becomes current with other unique keys than the person's current record had."""
    claimed_keys: tuple[bytes, ...] = ()
    """Unique keys that nobody held before (the writer inserts them: a key another batch claimed first then
    fails the batch, which is decided again knowing every owner)."""
    move_from: str | None = None
    """A 転入 recorded while this municipality still held the person (`is_move_in`): its 転出 is awaited."""


def check_kind_against_state(kind: ChangeKind, state: RecordState | None, after: ChangeKind | None = None) -> None:
    """Rules per kind of change (住基法 30-6 ①) against the person's state just before it (None: nothing before)
    and, where nothing is before it, the kind of the version just after it (None: nothing after)."""
    if state is None:
        if kind == ChangeKind.RECORD and after in (ChangeKind.RECORD, ChangeKind.MODIFY):
            # A person is not recorded twice without a 消除 between, whatever the event dates: a 記載 dated
            # before the record the file holds waits for the 消除 that separates them.
            raise FailedPrecondition("a record was notified before a record of the person the file holds, "
                                     "without a removal between", "ALREADY_RECORDED")
        if kind == ChangeKind.REMOVE and after == ChangeKind.RECORD:
            # The 消除 that separates an earlier record (not arrived yet) from the one the file holds: accepted,
            # so that the earlier 記載 can take its place before it (either would otherwise wait for the other).
            return
        if kind != ChangeKind.RECORD:
            raise FailedPrecondition(
                "a removal or correction was notified for a person not in the file", "UNKNOWN_PERSON")
        return
    if kind == ChangeKind.RECORD and state == RecordState.ACTIVE:
        raise FailedPrecondition("a record was notified for a person who is already recorded", "ALREADY_RECORDED")
    if kind == ChangeKind.REMOVE and state == RecordState.REMOVED:
        raise FailedPrecondition("a removal was notified for a person already removed", "ALREADY_REMOVED")
    if kind == ChangeKind.MODIFY and state == RecordState.REMOVED:
        raise FailedPrecondition("a correction was notified for a removed person", "PERSON_REMOVED")


def is_move_in(change: Change, before: RecordState | None, holder: str | None) -> bool:
    """住基法 30-6 ①: the new municipality's 転入 (国内転入) of a person another municipality of the prefecture
    still holds: the 転入 half of a move whose 転出 half has not arrived. It is recorded, so that a move ends
    the same in either arrival order and without a refusal: the person (one record, never two) becomes
    current in the new municipality, and the old one's 転出, when it comes, takes its place before it in
    history as a late 消除 by the municipality that held the person."""
    return (change.kind == ChangeKind.RECORD and change.reason == MOVE_IN and before == RecordState.ACTIVE
            and holder is not None and holder != change.municipality_code)


def is_same_day_move_out(change: Change, person: Person | None, neighbours: Neighbours) -> bool:
    """住基法 30-6 ①: the old municipality's 転出 of a person whose 転入 into another municipality of the
    prefecture, dated the same day, was notified and recorded first (`is_move_in`, awaiting this 転出). Its
    notification time puts it after the 転入, but the move-in is the later fact: it is kept in history as the
    old municipality's 消除, and the person stays current in the new municipality, without a refusal. A 転出
    dated after its 転入 is still refused."""
    return (change.kind == ChangeKind.REMOVE and person is not None and person.awaited == change.municipality_code
            and neighbours.holder != change.municipality_code and neighbours.before_day == change.event_date)


def is_late_same_day_move_in(change: Change, person: Person | None, neighbours: Neighbours) -> bool:
    """住基法 30-6 ①: the 転入 half of a same-day move (`is_move_in`) arriving after the old municipality's 転出,
    which was notified later and is the person's newest version. The move-in is the later fact: the 転入
    becomes the current record, as when it arrives first (`is_same_day_move_out`), with the same history."""
    return (person is not None and not neighbours.newest and neighbours.after == ChangeKind.REMOVE
            and person.newest is not None and person.newest[1] == RecordState.REMOVED
            and person.newest[0][0] == change.event_date and person.newest[0][2] == neighbours.holder)


def check_jurisdiction(kind: ChangeKind, notifier: str, record_municipality: str, holder: str | None) -> None:
    """住基法 30-6 ① / 30-41 ①: a municipality notifies only about its own residents (identity: by address,
    annex: by 本籍地, the record's municipality). It records (記載) only a record in its own municipality,
    and corrects or removes (修正, 消除) only a person whose record it holds (`holder`: the municipality
    that notified the version just before). A move or a 転籍 is the old one's 消除 and the new one's 記載."""
    if kind == ChangeKind.RECORD and record_municipality != notifier:
        raise FailedPrecondition("a municipality records only a record in its own municipality",
                                 "OUT_OF_JURISDICTION")
    if kind != ChangeKind.RECORD and holder is not None and holder != notifier:
        raise FailedPrecondition("the person's record is held by another municipality", "NOT_HOLDING_MUNICIPALITY")


def check_code_change(current_code: str, notification: Notification, *, becomes_current: bool) -> None:
    """A newest notification changes the current 住民票コード only as a change of code (with the previous
    code, 住基法 30-4); one that carries a former code would otherwise put the old code back."""
    if becomes_current and notification.resident_code != current_code and not notification.previous_resident_code:
        raise FailedPrecondition("the resident code was replaced; notify with the current code",
                                 "RESIDENT_CODE_REPLACED")


def same_identifier(keys: Sequence[bytes], held: frozenset[bytes]) -> bool:
    """Whether two sets of unique keys name the same identifier: the keys are the identifier's hashes under
    each HMAC key of a keyring (one key, or two during a rotation, `jukilib.keyring`), so two sets made under
    different keyrings name the same identifier if they share a hash, and no identifier if both are empty."""
    return not held.isdisjoint(keys) if keys or held else True


def check_unique_keys(notification: Notification, person: Person | None, rule: UniqueKey | None,
                      owners: Mapping[bytes, PersonId] | None, *, becomes_current: bool) -> tuple[bytes, ...]:
    """番号法 7 ②, 8: an identifier kept unique (the 個人番号) belongs to one person, and the current record's
    changes only under its change reasons. `owners`: who holds or held each key of the notification (None:
    not looked up, as long as no key is claimed twice). Returns the keys the notification claims."""
    if rule is None:
        return ()
    if person is None and owners is None:
        return notification.unique_keys  # a new person's keys, as long as nobody claimed them first
    holder = None if person is None else person.id
    if owners is not None and any(owners.get(key, holder) != holder for key in notification.unique_keys):
        raise FailedPrecondition(f"the {rule.label} belongs to another person", f"{rule.name}_IN_USE")
    if (person is not None and becomes_current and not same_identifier(notification.unique_keys, person.keys)
            and notification.change.reason not in rule.change_reasons):
        raise FailedPrecondition(f"the {rule.label} changes only under its change reasons",
                                 f"{rule.name}_CHANGE_REFUSED")
    known = person.keys if owners is None and person is not None else frozenset()
    return tuple(key for key in notification.unique_keys
                 if key not in known and (owners is None or key not in owners))


def decide(notification: Notification, person: Person | None, neighbours: Neighbours,
           new_id: PersonId | None = None, *, rule: UniqueKey | None = None,
           owners: Mapping[bytes, PersonId] | None = None) -> Decision:
    """What `notification` does to `person` (None: nobody has its 住民票コード), placed at `neighbours`;
    raises FailedPrecondition naming the rule that refuses it. `new_id` is the id of a new person; `rule`
    and `owners` the register's unique key and who holds the notification's keys (`check_unique_keys`)."""
    change = notification.change
    if is_same_day_move_out(change, person, neighbours):
        assert person is not None
        return Decision(notification, person.id, person.last_version + 1, RecordState.REMOVED,
                        becomes_current=False, new_person=False, former_code=None)
    moving_in = is_move_in(change, neighbours.before, neighbours.holder)
    if not moving_in:
        check_kind_against_state(change.kind, neighbours.before, neighbours.after)
    elif is_late_same_day_move_in(change, person, neighbours):
        neighbours = neighbours._replace(newest=True)  # it becomes current; its 転出 has arrived
        moving_in = False
    check_jurisdiction(change.kind, change.municipality_code, notification.search.municipality_code,
                       neighbours.holder)
    # 消除 keeps the person in the file, marked removed with the reason of its change information.
    state = RecordState.REMOVED if notification.change.kind == ChangeKind.REMOVE else RecordState.ACTIVE
    claimed = check_unique_keys(notification, person, rule, owners, becomes_current=neighbours.newest)
    if person is None:
        return Decision(notification, new_id or uuid.uuid4(), 1, state, becomes_current=True, new_person=True,
                        former_code=None, claimed_keys=claimed)
    check_code_change(person.resident_code, notification, becomes_current=neighbours.newest)
    if neighbours.newest:
        changed = person.resident_code != notification.resident_code
        former = person.resident_code if changed else None
    else:
        # A late notification is kept in history only; a code it carries that is not the current one is
        # a former code of the person.
        former = notification.resident_code if person.resident_code != notification.resident_code else None
    keys_changed = neighbours.newest and not same_identifier(notification.unique_keys, person.keys)
    return Decision(notification, person.id, person.last_version + 1, state, neighbours.newest, new_person=False,
                    former_code=former, keys_changed=keys_changed, claimed_keys=claimed,
                    move_from=neighbours.holder if moving_in else None)


def place(person: Person, key: OrderKey,
          stored: tuple[StoredNeighbour | None, StoredFollower | None] | None) -> Neighbours:
    """Where `key` falls among the person's versions: after the newest (the common case, no history
    needed), else among the stored versions (`stored`: the ones just before and just after it, read by the
    caller when `needs_history`) and those decided in this batch."""
    if person.newest is None or key > person.newest[0]:
        return Neighbours(None, True) if person.newest is None else Neighbours(
            person.newest[1], True, person.newest[0][2], before_day=person.newest[0][0])
    before_key: OrderKey | None = None
    after_key: OrderKey | None = None
    before_state, after_kind = None, None
    if stored is not None:
        before, after = stored
        if before is not None:
            before_key, before_state = before
        if after is not None:
            after_key, after_kind = after
    for version_key, state, kind in person.decided:
        if version_key < key and (before_key is None or version_key > before_key):
            before_key, before_state = version_key, state
        elif version_key > key and (after_key is None or version_key < after_key):
            after_key, after_kind = version_key, kind
    return Neighbours(before_state, after_key is None, None if before_key is None else before_key[2], after_kind,
                      None if before_key is None else before_key[0])


def needs_history(person: Person, key: OrderKey) -> bool:
    """Whether placing `key` needs the person's stored versions: a late notification of a stored person."""
    return person.stored and person.newest is not None and key <= person.newest[0]


class Ledger:
    """The persons a batch is about, as its decisions change them: who holds which 住民票コード, each
    person's newest version and what the batch decided. Starts from the stored persons (locked)."""

    def __init__(self, persons: Iterable[Person], former_codes: Iterable[tuple[str, PersonId]] = (),
                 key_owners: dict[bytes, PersonId] | None = None) -> None:
        self.key_owners = key_owners
        """Who holds or held each unique key the batch names (None: not looked up)."""
        self.persons: dict[PersonId, Person] = {}
        self._current: dict[str, PersonId] = {}
        self._former: dict[str, PersonId] = {}
        for person in persons:
            self.persons[person.id] = person
            self._current[person.resident_code] = person.id
        for code, person_id in former_codes:
            # A code that is no longer its person's current one (a concurrent change) is a former one.
            if person_id in self.persons and self._current.get(code) != person_id:
                self._former.setdefault(code, person_id)

    def owner(self, resident_code: str) -> PersonId | None:
        """Who has, or had, this 住民票コード (a code held now wins over a former one)."""
        return self._current.get(resident_code) or self._former.get(resident_code)

    def locate(self, notification: Notification) -> Person | None:
        """The person the notification is about; checks the 住民票コード chain (住基法 30-4: a change of code
        names the previous code, and the new code must not be another person's)."""
        previous = notification.previous_resident_code
        person_id = self.owner(previous or notification.resident_code)
        if person_id is None:
            if previous:
                raise FailedPrecondition("no person has the previous resident code", "UNKNOWN_PREVIOUS_RESIDENT_CODE")
            return None
        if previous:
            holder = self.owner(notification.resident_code)
            if holder is not None and holder != person_id:
                raise FailedPrecondition("the new resident code belongs to another person", "RESIDENT_CODE_IN_USE")
        return self.persons[person_id]

    def record(self, decision: Decision) -> None:
        """Take an accepted decision into account for the next ones."""
        notification = decision.notification
        key = notification.change.order_key
        person = self.persons.get(decision.person_id)
        if person is None:
            person = Person(decision.person_id, notification.resident_code, 0, None, stored=False)
            self.persons[person.id] = person
            self._current[person.resident_code] = person.id
        person.last_version = decision.version
        if decision.former_code is not None:
            self._former.setdefault(decision.former_code, person.id)  # a code already kept stays with its person
        if decision.becomes_current:
            if person.resident_code != notification.resident_code:
                if self._current.get(person.resident_code) == person.id:
                    del self._current[person.resident_code]
                self._current[notification.resident_code] = person.id
                person.resident_code = notification.resident_code
            person.newest = (key, decision.state)
            person.keys = frozenset(notification.unique_keys)
        if decision.move_from is not None:
            person.awaited = decision.move_from
        elif notification.change.kind == ChangeKind.REMOVE and person.awaited == notification.change.municipality_code:
            person.awaited = None  # the 転出 half arrived: the move is complete
        if self.key_owners is not None:
            for claimed in decision.claimed_keys:
                self.key_owners[claimed] = person.id
        person.decided.append((key, decision.state, notification.change.kind))
