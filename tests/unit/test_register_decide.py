"""The register's decision function (`jukilib.register.decide`), without a database: the rules of
住基法 30-6 ① per kind of change, the 住民票コード chain (30-4), ordering by event, and the permutation
property (any arrival order of a person's notifications, resent until accepted, ends in the same
current record and history)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from juki.register.v1 import register_pb2 as rpb
from jukilib.errors import FailedPrecondition
from jukilib.register import rows
from jukilib.register.decide import (
    NEW_PERSON,
    Decision,
    Ledger,
    StoredFollower,
    StoredNeighbour,
    decide,
    needs_history,
    place,
    same_identifier,
)
from jukilib.register.model import (
    REVIEW_CHARACTERS,
    REVIEW_MOVE_HALF,
    Change,
    ChangeKind,
    Notification,
    OrderKey,
    RecordState,
    SearchKeys,
)

RECORD, REMOVE, MODIFY = ChangeKind.RECORD, ChangeKind.REMOVE, ChangeKind.MODIFY
KEYS = SearchKeys("ヤマダタロウ", None, 1990, 1, 1, "1", "102016")


MAEBASHI, TAKASAKI = "102016", "102024"
MOVE_IN, MOVE_OUT, BIRTH = (rpb.CHANGE_REASON_DOMESTIC_MOVE_IN, rpb.CHANGE_REASON_DOMESTIC_MOVE_OUT,
                            rpb.CHANGE_REASON_BIRTH)


def notification(kind: ChangeKind, day: int, notification_id: str, code: str = "12345678901",
                 previous: str | None = None, notifier: str = MAEBASHI, municipality: str | None = None,
                 reason: int = MOVE_IN, minute: int | None = None) -> Notification:
    """A notification by `notifier` of a record in `municipality` (by default the notifier's), notified at 9:`minute`
    (by default the day's number)."""
    notified = dt.datetime(2026, 4, 1, 9, day if minute is None else minute, tzinfo=dt.UTC)
    change = Change(kind, reason, dt.date(2025, 1, day), notified,
                    dt.datetime(2026, 4, 2, tzinfo=dt.UTC), notifier, notification_id)
    keys = KEYS._replace(municipality_code=municipality or notifier)
    return Notification(change, code, {"resident_code": code, "address": notification_id}, b"digest", keys,
                        previous_resident_code=previous)


class MemoryRegister:
    """A register with its history in memory: each notification applied alone, as a batch of one."""

    def __init__(self) -> None:
        self.ledger = Ledger([])
        self.history: dict[uuid.UUID, list[tuple[OrderKey, RecordState, str, ChangeKind]]] = defaultdict(list)
        self.current: dict[uuid.UUID, tuple[RecordState, str]] = {}

    def apply(self, n: Notification) -> Decision:
        person = self.ledger.locate(n)
        key = n.change.order_key
        if person is None:
            decision = decide(n, None, NEW_PERSON)
        else:
            stored = self._neighbours(person.id, key) if needs_history(person, key) else None
            decision = decide(n, person, place(person, key, stored))
        self.ledger.record(decision)
        committed = self.ledger.persons[decision.person_id]
        committed.stored, committed.decided = True, []
        self.history[decision.person_id].append((key, decision.state, n.change.notification_id, n.change.kind))
        if decision.becomes_current:
            self.current[decision.person_id] = (decision.state, n.change.notification_id)
        return decision

    def _neighbours(self, person_id: uuid.UUID, key: OrderKey
                    ) -> tuple[StoredNeighbour | None, StoredFollower | None]:
        before = [(k, s) for k, s, _, _ in self.history[person_id] if k < key]
        after = [(k, kind) for k, _, _, kind in self.history[person_id] if k > key]
        return (StoredNeighbour(*max(before)) if before else None), (StoredFollower(*min(after)) if after else None)

    def state_of(self, person_id: uuid.UUID) -> tuple[tuple[RecordState, str], list[tuple[RecordState, str]]]:
        return self.current[person_id], [(s, n) for _, s, n, _ in sorted(self.history[person_id])]


def test_a_first_record_makes_a_new_current_person() -> None:
    decision = decide(notification(RECORD, 1, "a"), None, NEW_PERSON)
    assert (decision.version, decision.state, decision.becomes_current, decision.new_person) == (
        1, RecordState.ACTIVE, True, True)


@pytest.mark.parametrize(("kind", "before", "reason"), [
    (MODIFY, None, "UNKNOWN_PERSON"),
    (REMOVE, None, "UNKNOWN_PERSON"),
    (RECORD, RecordState.ACTIVE, "ALREADY_RECORDED"),
    (REMOVE, RecordState.REMOVED, "ALREADY_REMOVED"),
    (MODIFY, RecordState.REMOVED, "PERSON_REMOVED"),
])
def test_a_kind_of_change_that_the_state_before_it_forbids_is_refused(
        kind: ChangeKind, before: RecordState | None, reason: str) -> None:
    register = MemoryRegister()
    if before is not None:
        register.apply(notification(RECORD, 1, "first"))
    if before == RecordState.REMOVED:
        register.apply(notification(REMOVE, 2, "removed"))
    with pytest.raises(FailedPrecondition) as refused:
        register.apply(notification(kind, 5, "refused"))
    assert refused.value.reason == reason


def test_a_municipality_records_only_a_record_in_its_own_municipality() -> None:
    # 住基法 30-6 ①: Takasaki cannot record a person whose address is in Maebashi.
    with pytest.raises(FailedPrecondition) as refused:
        MemoryRegister().apply(notification(RECORD, 1, "in", notifier=TAKASAKI, municipality=MAEBASHI))
    assert refused.value.reason == "OUT_OF_JURISDICTION"


@pytest.mark.parametrize("kind", [MODIFY, REMOVE])
def test_only_the_municipality_holding_the_person_corrects_or_removes_them(kind: ChangeKind) -> None:
    # 住基法 30-6 ① / 30-41 ①: the same holds for a late notification, against the version before it.
    register = MemoryRegister()
    register.apply(notification(RECORD, 1, "in"))
    register.apply(notification(MODIFY, 9, "newest"))
    for day in (5, 10):
        with pytest.raises(FailedPrecondition) as refused:
            register.apply(notification(kind, day, f"takeover-{day}", notifier=TAKASAKI))
        assert refused.value.reason == "NOT_HOLDING_MUNICIPALITY"


def test_a_move_is_the_old_municipalitys_removal_and_the_new_ones_record() -> None:
    register = MemoryRegister()
    first = register.apply(notification(RECORD, 1, "in"))
    register.apply(notification(REMOVE, 2, "out"))
    moved = register.apply(notification(RECORD, 3, "moved in", notifier=TAKASAKI))
    assert (moved.person_id, moved.state) == (first.person_id, RecordState.ACTIVE)
    corrected = register.apply(notification(MODIFY, 4, "fix", notifier=TAKASAKI))
    assert corrected.becomes_current


def test_a_move_in_that_arrives_before_the_move_out_ends_as_the_other_order() -> None:
    # 住基法 30-6 ①: 前橋市's 転出 and 高崎市's 転入 of one person, in either arrival order: no refusal, one
    # record, active in 高崎市, both events in history.
    def move(arrival: list[int]) -> tuple[tuple[RecordState, str], list[tuple[RecordState, str]]]:
        register = MemoryRegister()
        register.apply(notification(RECORD, 1, "born", reason=BIRTH))
        halves = [notification(REMOVE, 10, "out", reason=MOVE_OUT),
                  notification(RECORD, 11, "in", notifier=TAKASAKI, reason=MOVE_IN)]
        decisions = [register.apply(halves[i]) for i in arrival]
        assert len({d.person_id for d in decisions}) == 1
        return register.state_of(decisions[0].person_id)

    out_first, in_first = move([0, 1]), move([1, 0])
    assert out_first == in_first == ((RecordState.ACTIVE, "in"), [
        (RecordState.ACTIVE, "born"), (RecordState.REMOVED, "out"), (RecordState.ACTIVE, "in")])


def test_a_record_by_another_municipality_that_is_not_a_move_in_is_refused() -> None:
    register = MemoryRegister()
    register.apply(notification(RECORD, 1, "born", reason=BIRTH))
    with pytest.raises(FailedPrecondition) as refused:  # a birth cannot be recorded twice, by anyone
        register.apply(notification(RECORD, 2, "born again", notifier=TAKASAKI, reason=BIRTH))
    assert refused.value.reason == "ALREADY_RECORDED"
    with pytest.raises(FailedPrecondition) as again:  # nor a 転入 by the municipality that holds the person
        register.apply(notification(RECORD, 3, "moved in", reason=MOVE_IN))
    assert again.value.reason == "ALREADY_RECORDED"


def test_a_second_record_dated_before_the_files_record_is_refused() -> None:
    # 住基法 30-6 ①: one person, one record; a 記載 dated before the one the file holds, with no 消除 between,
    # would record them twice.
    register = MemoryRegister()
    register.apply(notification(RECORD, 5, "recorded", reason=BIRTH))
    with pytest.raises(FailedPrecondition) as refused:
        register.apply(notification(RECORD, 3, "recorded earlier", reason=BIRTH))
    assert refused.value.reason == "ALREADY_RECORDED"
    # The 消除 that separates them arrives: the earlier 記載 then takes its place (a life recorded again).
    register.apply(notification(REMOVE, 4, "removed", reason=MOVE_OUT))
    earlier = register.apply(notification(RECORD, 3, "recorded earlier", reason=BIRTH))
    assert register.state_of(earlier.person_id) == ((RecordState.ACTIVE, "recorded"), [
        (RecordState.ACTIVE, "recorded earlier"), (RecordState.REMOVED, "removed"), (RecordState.ACTIVE, "recorded")])


def test_a_record_after_a_removal_records_the_person_again() -> None:
    register = MemoryRegister()
    first = register.apply(notification(RECORD, 1, "in"))
    register.apply(notification(REMOVE, 2, "out"))
    again = register.apply(notification(RECORD, 3, "back"))
    assert (again.person_id, again.version, again.state, again.new_person) == (
        first.person_id, 3, RecordState.ACTIVE, False)


def test_a_late_notification_is_kept_in_history_and_leaves_the_current_record() -> None:
    register = MemoryRegister()
    first = register.apply(notification(RECORD, 1, "in"))
    register.apply(notification(MODIFY, 9, "newest"))
    late = register.apply(notification(MODIFY, 5, "late"))
    assert not late.becomes_current and late.version == 3
    assert register.state_of(first.person_id) == ((RecordState.ACTIVE, "newest"), [
        (RecordState.ACTIVE, "in"), (RecordState.ACTIVE, "late"), (RecordState.ACTIVE, "newest")])


def test_a_change_of_code_keeps_the_former_code_leading_to_the_person() -> None:
    register = MemoryRegister()
    first = register.apply(notification(RECORD, 1, "in", code="11111111111"))
    changed = register.apply(notification(MODIFY, 2, "code", code="22222222222", previous="11111111111"))
    assert changed.former_code == "11111111111"
    assert register.ledger.owner("11111111111") == register.ledger.owner("22222222222") == first.person_id


@pytest.mark.parametrize(("code", "previous", "reason"), [
    ("33333333333", "99999999999", "UNKNOWN_PREVIOUS_RESIDENT_CODE"),
    ("22222222222", "11111111111", "RESIDENT_CODE_IN_USE"),
])
def test_a_change_of_code_must_name_a_known_previous_code_and_a_free_new_one(
        code: str, previous: str, reason: str) -> None:
    register = MemoryRegister()
    register.apply(notification(RECORD, 1, "one", code="11111111111"))
    register.apply(notification(RECORD, 1, "two", code="22222222222"))
    with pytest.raises(FailedPrecondition) as refused:
        register.apply(notification(MODIFY, 2, "change", code=code, previous=previous))
    assert refused.value.reason == reason


def test_a_newest_notification_with_another_code_and_no_previous_code_is_refused() -> None:
    register = MemoryRegister()
    register.apply(notification(RECORD, 1, "in", code="11111111111"))
    register.apply(notification(MODIFY, 2, "code", code="22222222222", previous="11111111111"))
    with pytest.raises(FailedPrecondition) as refused:
        register.apply(notification(MODIFY, 3, "old code", code="11111111111"))
    assert refused.value.reason == "RESIDENT_CODE_REPLACED"


def test_decisions_of_one_batch_see_each_other() -> None:
    ledger = Ledger([])
    first = decide(notification(RECORD, 1, "in"), None, NEW_PERSON)
    ledger.record(first)
    fix = notification(MODIFY, 2, "fix")
    person = ledger.locate(fix)
    assert person is not None and person.id == first.person_id
    second = decide(fix, person, place(person, fix.change.order_key, None))
    assert (second.version, second.becomes_current) == (2, True)


# A life in the file: recorded, corrected, moved out, recorded again, corrected, died.
LIFE = [RECORD, MODIFY, MODIFY, REMOVE, RECORD, MODIFY, REMOVE]


def _apply_with_resends(register: MemoryRegister, notifications: list[Notification]) -> uuid.UUID:
    pending, person_id = list(notifications), None
    while pending:
        refused = []
        for n in pending:
            try:
                person_id = register.apply(n).person_id
            except FailedPrecondition:
                refused.append(n)
        assert len(refused) < len(pending), "no progress: the resends never converge"
        pending = refused
    assert person_id is not None
    return person_id


# A life with a move within the prefecture: born in 前橋市, corrected, moved to 高崎市 (転出, 転入), corrected
# there, died there.
MOVING_LIFE = [(RECORD, MAEBASHI, BIRTH), (MODIFY, MAEBASHI, 0), (REMOVE, MAEBASHI, MOVE_OUT),
               (RECORD, TAKASAKI, MOVE_IN), (MODIFY, TAKASAKI, 0), (REMOVE, TAKASAKI, 0)]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_arrival_order_of_a_life_with_a_move_gives_the_same_record_and_history(data: st.DataObject) -> None:
    life = [notification(kind, 2 * i + 1, f"m{i}", notifier=notifier, reason=reason)
            for i, (kind, notifier, reason) in enumerate(MOVING_LIFE)]
    in_order, shuffled = MemoryRegister(), MemoryRegister()
    expected = in_order.state_of(_apply_with_resends(in_order, life))
    order = data.draw(st.permutations(range(len(life))))
    assert shuffled.state_of(_apply_with_resends(shuffled, [life[i] for i in order])) == expected


@settings(max_examples=300, deadline=None)
@given(length=st.integers(min_value=1, max_value=len(LIFE)), data=st.data(),
       same_day=st.lists(st.booleans(), min_size=len(LIFE), max_size=len(LIFE)))
def test_any_arrival_order_gives_the_same_current_record_and_history(
        length: int, same_day: list[bool], data: st.DataObject) -> None:
    days, day = [], 1
    for index in range(length):
        day += 0 if index and same_day[index] else 1
        days.append(day)
    life = [notification(kind, days[i], f"n{i}") for i, kind in enumerate(LIFE[:length])]
    in_order, shuffled = MemoryRegister(), MemoryRegister()
    expected = in_order.state_of(_apply_with_resends(in_order, life))
    order = data.draw(st.permutations(range(length)))
    assert shuffled.state_of(_apply_with_resends(shuffled, [life[i] for i in order])) == expected


def test_a_move_in_before_its_move_out_awaits_the_old_municipality_and_the_move_out_settles_it() -> None:
    # 住基法 30-6 ①: the 転入 half alone is marked for the review queue (`rows.build`), naming whose 転出 it
    # awaits; the 転出, arriving late, is the departure that settles it. A 転入 after the 転出 awaits nothing.
    register = MemoryRegister()
    register.apply(notification(RECORD, 1, "born", reason=BIRTH))
    moved_in = register.apply(notification(RECORD, 11, "in", notifier=TAKASAKI, reason=MOVE_IN))
    moved_out = register.apply(notification(REMOVE, 10, "out", reason=MOVE_OUT))
    built = rows.build([moved_in, moved_out], "identity", [])
    assert [(r.kind, r.rule, r.awaited_municipality) for r in built.review] == [
        (REVIEW_MOVE_HALF, "MOVE_HALF_ALONE", MAEBASHI)]
    assert built.departures == [(moved_out.person_id, MAEBASHI)]

    in_order = MemoryRegister()
    in_order.apply(notification(RECORD, 1, "born", reason=BIRTH))
    in_order.apply(notification(REMOVE, 10, "out", reason=MOVE_OUT))
    after = in_order.apply(notification(RECORD, 11, "in", notifier=TAKASAKI, reason=MOVE_IN))
    assert after.move_from is None and rows.build([after], "identity", []).review == []


def test_a_record_with_characters_to_identify_is_accepted_and_marked_for_review() -> None:
    # DOMAIN §B: never refused for its characters; the fields holding them go to 文字同定.
    recorded = notification(RECORD, 1, "gaiji")._replace(unidentified=("record.full_name",))
    decision = decide(recorded, None, NEW_PERSON)
    built = rows.build([decision], "identity", [])
    assert [(r.kind, r.field_paths) for r in built.review] == [(REVIEW_CHARACTERS, ("record.full_name",))]


@settings(max_examples=100, deadline=None)
@given(move_in_notified_first=st.booleans(), data=st.data())
def test_any_arrival_order_of_a_move_on_one_day_gives_the_same_record_and_history(
        move_in_notified_first: bool, data: st.DataObject) -> None:
    # 住基法 30-6 ①: the halves of a same-day move of a person in the file, notified in either order, arriving in
    # any order (with the new municipality's correction after it), end the same: active in 高崎市, both events
    # in history, the same versions. (A 転入 arriving before the person's very first 記載 is another matter:
    # with the 転出 after it on the day, nothing separates the two 記載.)
    first, second = (5, 50) if move_in_notified_first else (50, 5)
    life = [notification(RECORD, 1, "born", reason=BIRTH),
            notification(RECORD, 10, "in", notifier=TAKASAKI, reason=MOVE_IN, minute=first),
            notification(REMOVE, 10, "out", reason=MOVE_OUT, minute=second),
            notification(MODIFY, 12, "fix", notifier=TAKASAKI, reason=0)]
    in_order = MemoryRegister()
    expected = in_order.state_of(_apply_with_resends(in_order, life))
    assert expected[0] == (RecordState.ACTIVE, "fix")
    shuffled = MemoryRegister()
    order = [0, *data.draw(st.permutations(range(1, len(life))))]
    assert shuffled.state_of(_apply_with_resends(shuffled, [life[i] for i in order])) == expected


@pytest.mark.parametrize("in_first", [True, False], ids=["move-in-notified-first", "move-out-notified-first"])
def test_a_move_on_one_day_ends_in_the_new_municipality_whichever_half_was_notified_first(in_first: bool) -> None:
    # 住基法 30-6 ①: 前橋市's 転出 and 高崎市's 転入 dated the same day, each arriving when notified. Neither is
    # refused; the person is active in 高崎市 with both events in history. A 転出 notified after its 転入 comes
    # after it in event order, but is kept as history only (`is_same_day_move_out`).
    register = MemoryRegister()
    born = register.apply(notification(RECORD, 1, "born", reason=BIRTH))
    moved_in = notification(RECORD, 10, "in", notifier=TAKASAKI, reason=MOVE_IN, minute=5 if in_first else 50)
    moved_out = notification(REMOVE, 10, "out", reason=MOVE_OUT, minute=50 if in_first else 5)
    decisions = [register.apply(half) for half in ((moved_in, moved_out) if in_first else (moved_out, moved_in))]
    assert [d.state for d in decisions] == ([RecordState.ACTIVE, RecordState.REMOVED] if in_first
                                            else [RecordState.REMOVED, RecordState.ACTIVE])
    current, history = register.state_of(born.person_id)
    assert current == (RecordState.ACTIVE, "in")
    assert sorted(history) == sorted([(RecordState.ACTIVE, "born"), (RecordState.REMOVED, "out"),
                                      (RecordState.ACTIVE, "in")])
    fixed = register.apply(notification(MODIFY, 12, "fix", notifier=TAKASAKI, reason=0))
    assert fixed.becomes_current  # 高崎市 holds the person from then on


def test_a_move_out_dated_after_its_move_in_is_still_refused() -> None:
    register = MemoryRegister()
    register.apply(notification(RECORD, 1, "born", reason=BIRTH))
    register.apply(notification(RECORD, 10, "in", notifier=TAKASAKI, reason=MOVE_IN))
    with pytest.raises(FailedPrecondition) as refused:
        register.apply(notification(REMOVE, 11, "out", reason=MOVE_OUT))
    assert refused.value.reason == "NOT_HOLDING_MUNICIPALITY"


def test_keys_made_under_different_hmac_keys_name_the_same_individual_number_when_they_share_a_hash() -> None:
    # 番号法 7 ②, during an HMAC key rotation: a person hashed under the old key only, notified under both
    # keys, keeps their number (no change refused); a number sharing no hash is another number.
    old, new, other = b"o" * 32, b"n" * 32 + b"h1", b"x" * 32
    assert same_identifier((new, old), frozenset({old}))
    assert same_identifier((new,), frozenset({old, new}))
    assert not same_identifier((other,), frozenset({old, new}))
    assert same_identifier((), frozenset()) and not same_identifier((old,), frozenset())
    assert not same_identifier((), frozenset({old}))
