"""Keys of what the suite seals at rest, rotated while it runs (issue 18; 番号法 12 安全管理措置, 7 ②).

- The written notices (書面) hold the resident's record, 個人番号 included: their PDF and JSON are sealed in
  the database (AES-256-GCM, bound to the document), and the stored SHA-256 is that of what the resident
  receives.
- The data key and the HMAC key of the 個人番号's lookup hash are rotated (`juki keys new`, `juki keys rotate`,
  `juki keys rotate --hmac`) under a stream of notifications and lookups by 個人番号 through the gateway:
  every lookup finds its person, no write is lost or applied twice, the 個人番号 stays one person's, and
  afterwards no row refers to a retired key and the keyring file no longer holds it.

This module runs its own suite (its own home and keyring file, created in the format from before HMAC keys
had ids), so that rotating the keys touches no other test.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from pypdf import PdfReader

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from jukilib.devcerts import DevPki
from jukilib.grpc.channels import secure_channel
from jukilib.keyring import Keyring
from jukitools import cli_keys
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents
from tests.conftest import RunningSuite, fresh_database, start_suite

MAEBASHI = "102016"
NOTIFY_TIME = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
SEED = 181_000  # residents of this module only


@pytest.fixture(scope="module")
async def keyed(admin_url: str, pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSuite]:
    home = tmp_path_factory.mktemp("juki-keys-home")
    # A keyring file as written before HMAC keys had ids: a single `hmac_key`.
    (home / "keyring.json").write_text(json.dumps({
        "active": "k-first", "keys": {"k-first": base64.b64encode(os.urandom(32)).decode()},
        "hmac_key": base64.b64encode(os.urandom(32)).decode()}))
    (home / "keyring.json").chmod(0o600)
    running = await start_suite(pki, await fresh_database(admin_url), home)
    try:
        yield running
    finally:
        for service in reversed(list(running.services)):
            await running.services[service].stop(0.5)


def _keyring_path(suite: RunningSuite) -> Path:
    assert suite.home is not None
    return suite.home / "keyring.json"


def _residents(count: int, offset: int) -> list[SyntheticResident]:
    return [dataclasses.replace(r, municipality_code=MAEBASHI, address=f"群馬県前橋市大手町{offset + i}番地")
            for i, r in enumerate(generate_residents(count, seed=SEED + offset))]


async def _notify(suite: RunningSuite, request: Any) -> Any:
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        return await identity_pb2_grpc.IdentityServiceStub(channel).ApplyNotification(
            request, metadata=purpose_metadata("CS-NOTIFY-30-6", request_id=str(uuid.uuid4())), timeout=20)


def _birth(resident: SyntheticResident, notification_id: str) -> Any:
    return birth_notification(resident, notification_id, dt.date(2026, 3, 1), NOTIFY_TIME)


def _moved(resident: SyntheticResident, notification_id: str, day: int) -> Any:
    moved = dataclasses.replace(resident, address=f"群馬県前橋市大手町{day}丁目{day}番")
    request = birth_notification(moved, notification_id, dt.date(2026, 3, day), NOTIFY_TIME)
    request.change.kind = rpb.CHANGE_KIND_MODIFY
    request.change.reason = rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY
    return request


async def _by_number(suite: RunningSuite, number: str) -> Any:
    async with secure_channel(suite.gateway, suite.client_tls("kikaku-bu")) as channel:
        return await identity_pb2_grpc.IdentityServiceStub(channel).LookupResidentByIndividualNumber(
            identity_pb2.LookupResidentByIndividualNumberRequest(individual_number=number),
            metadata=purpose_metadata("TAX-NUMBER-30-15-1-2", credential=suite.credential("kikaku-bu"),
                                      request_id=str(uuid.uuid4())), timeout=20)


async def _desk(suite: RunningSuite, method: str, request: Any, purpose: str = "DISCLOSURE-30-32") -> Any:
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        return await getattr(disclosure_pb2_grpc.DisclosureServiceStub(channel), method)(
            request, metadata=purpose_metadata(purpose, credential=suite.credential("disclosure-desk"),
                                               request_id=str(uuid.uuid4())), timeout=20)


async def _correction_request(suite: RunningSuite, notice: str, number: str) -> str:
    """住基法 30-35: the resident asks that the 個人番号 disclosed in `notice` be corrected to `number`."""
    request = dpb.CreateCorrectionCaseRequest(correction_case=dpb.CorrectionCase(
        disclosure_case=notice.split("/documents/", 1)[0], file=dpb.RECORD_FILE_IDENTITY,
        items=[dpb.CorrectionItem(field="record.individual_number", action=dpb.CORRECTION_ACTION_CORRECT,
                                  requested_value=number)]))
    case = await _desk(suite, "CreateCorrectionCase", request, "CORRECTION-30-35")
    return str(case.name)


async def _requested_value(suite: RunningSuite, name: str) -> str:
    case = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=name), "CORRECTION-30-35")
    return str(case.items[0].requested_value)


async def _stored_items(suite: RunningSuite, name: str) -> str:
    connection = await asyncpg.connect(suite.owner_url("disclosure"))
    try:
        await connection.execute("SET search_path TO disclosure")
        items: str = await connection.fetchval("SELECT items::text FROM correction_case WHERE id = $1",
                                               uuid.UUID(name.rsplit("/", 1)[-1]))
        return items
    finally:
        await connection.close()


async def _decision_notice(suite: RunningSuite, resident: SyntheticResident) -> str:
    """住基法 30-32, 30-33: a disclosure of the resident's identity file, decided; the decision notice's name."""
    request = dpb.CreateDisclosureCaseRequest(disclosure_case=dpb.DisclosureCase(
        subject_resident_code=resident.resident_code, requester_kind=dpb.REQUESTER_KIND_PERSON,
        requester_name="請求者 本人", identity_documents=[dpb.IDENTITY_DOCUMENT_MY_NUMBER_CARD],
        channel=dpb.CHANNEL_COUNTER, scopes=[dpb.DISCLOSURE_SCOPE_IDENTITY_FILE]))
    case = await _desk(suite, "CreateDisclosureCase", request)
    verified = await _desk(suite, "VerifyDisclosureCaseIdentity", dpb.VerifyDisclosureCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=True))
    decided = await _desk(suite, "DecideDisclosureCase", dpb.DecideDisclosureCaseRequest(
        name=verified.name, etag=verified.etag))
    (notice,) = decided.documents
    return str(notice)


async def _opened_notice(suite: RunningSuite, name: str) -> tuple[Any, str]:
    """The notice as the resident receives it, checked against its stored hashes; with its PDF's text."""
    notice = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=name))
    assert notice.pdf_sha256 == hashlib.sha256(notice.pdf).hexdigest()
    assert notice.json_sha256 == hashlib.sha256(notice.json.encode()).hexdigest()
    return notice, "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(notice.pdf)).pages)


async def _document_row(suite: RunningSuite, name: str) -> asyncpg.Record:
    connection = await asyncpg.connect(suite.owner_url("disclosure"))
    try:
        await connection.execute("SET search_path TO disclosure")
        row: asyncpg.Record = await connection.fetchrow(
            "SELECT pdf, json, key_id FROM disclosure_document WHERE id = $1", uuid.UUID(name.rsplit("/", 1)[-1]))
        return row
    finally:
        await connection.close()


def _holds_plaintext(row: asyncpg.Record, resident: SyntheticResident) -> bool:
    stored = bytes(row["pdf"]) + bytes(row["json"])
    needles = [b"%PDF", resident.individual_number.encode(), resident.resident_code.encode(),
               resident.full_name.encode(), resident.full_name.encode("utf-16-be")]
    return any(needle in stored for needle in needles)


async def test_a_notice_is_sealed_in_the_database_and_opens_as_issued(keyed: RunningSuite) -> None:
    # 番号法 12: a notice holds the 個人番号; the database keeps only ciphertext, the resident gets the document
    # whose SHA-256 was recorded when it was issued.
    (resident,) = _residents(1, 0)
    await _notify(keyed, _birth(resident, "keys-sealed-1"))
    name = await _decision_notice(keyed, resident)
    row = await _document_row(keyed, name)
    assert row["key_id"] == Keyring.load(_keyring_path(keyed)).active
    assert not _holds_plaintext(row, resident)
    notice, text = await _opened_notice(keyed, name)
    assert notice.pdf.startswith(b"%PDF")
    assert resident.individual_number in text and resident.individual_number in notice.json
    # A correction request's requested value (here a 個人番号) is sealed too, and answered as requested.
    requested = _residents(2, 0)[1].individual_number
    correction = await _correction_request(keyed, name, requested)
    assert requested not in await _stored_items(keyed, correction)
    assert await _requested_value(keyed, correction) == requested


async def _plaintext_as_before_sealing(suite: RunningSuite, name: str) -> None:
    """The notice as a document issued before migration 0005 was stored: plaintext, no key."""
    notice = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=name))
    connection = await asyncpg.connect(suite.owner_url("disclosure"))
    try:
        await connection.execute("SET search_path TO disclosure")
        await connection.execute(
            """UPDATE disclosure_document SET pdf = $2, json = $3, key_id = NULL, pdf_nonce = NULL,
                   json_nonce = NULL WHERE id = $1""",
            uuid.UUID(name.rsplit("/", 1)[-1]), notice.pdf, notice.json.encode())
    finally:
        await connection.close()


async def _correction_as_before_sealing(suite: RunningSuite, name: str, requested: str) -> None:
    """The correction request as stored before migration 0005: its requested value in clear."""
    connection = await asyncpg.connect(suite.owner_url("disclosure"))
    try:
        await connection.execute("SET search_path TO disclosure")
        await connection.execute(
            """UPDATE correction_case SET items = jsonb_build_array(jsonb_build_object(
                   'field', 'record.individual_number', 'action', $2::int, 'requested_value', $3::text))
               WHERE id = $1""", uuid.UUID(name.rsplit("/", 1)[-1]), dpb.CORRECTION_ACTION_CORRECT, requested)
    finally:
        await connection.close()


@dataclasses.dataclass
class Traffic:
    """What the background writers and readers did, for the checks after the rotation."""

    known: list[SyntheticResident]
    applied: dict[str, int] = dataclasses.field(default_factory=dict)
    """notification id -> the version the register answered."""
    lookups: int = 0
    wrong: list[str] = dataclasses.field(default_factory=list)
    """What went wrong, without personal data (a notification id, a status code)."""


async def _write(suite: RunningSuite, traffic: Traffic, movers: list[SyntheticResident], stop: asyncio.Event) -> None:
    """Births (each with a new 個人番号) and moves of persons recorded before the rotation began (the same
    番号 under whichever key their hash was made), one after another; each mover's moves on later days."""
    fresh = _residents(300, 1000)
    for index, resident in enumerate(fresh):
        if stop.is_set():
            return
        day = 2 + (index // len(movers)) % 27
        for notification_id, request, born in (
                (f"keys-birth-{index}", _birth(resident, f"keys-birth-{index}"), True),
                (f"keys-move-{index}", _moved(movers[index % len(movers)], f"keys-move-{index}", day), False)):
            try:
                answer = await _notify(suite, request)
            except grpc.aio.AioRpcError as error:
                traffic.wrong.append(f"{notification_id}: {error.code().name}")
                continue
            traffic.applied[notification_id] = answer.resident_version.version
            if born:
                traffic.known.append(resident)
        await asyncio.sleep(0.02)


async def _look_up(suite: RunningSuite, traffic: Traffic, stop: asyncio.Event) -> None:
    """Lookups by 個人番号 of persons already acknowledged: each must answer that person."""
    chooser = random.Random(18)
    while not stop.is_set():
        resident = chooser.choice(traffic.known)
        try:
            found = await _by_number(suite, resident.individual_number)
        except grpc.aio.AioRpcError as error:
            traffic.wrong.append(f"lookup: {error.code().name}")
        else:
            if found.record.resident_code != resident.resident_code:
                traffic.wrong.append("lookup: another person")
        traffic.lookups += 1
        await asyncio.sleep(0.1)


async def _rows_outside(suite: RunningSuite, data_keys: frozenset[str], hmac_keys: frozenset[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    queries = {
        "identity": [("individual_number", "SELECT count(*) FROM individual_number WHERE key_id <> ALL($1)",
                      data_keys),
                     ("person_key", "SELECT count(*) FROM person_key WHERE hmac_key_id <> ALL($1)", hmac_keys),
                     ("identity review_item", "SELECT count(*) FROM review_item WHERE key_id <> ALL($1)", data_keys)],
        "disclosure": [("disclosure_document", "SELECT count(*) FROM disclosure_document"
                        " WHERE key_id IS NULL OR key_id <> ALL($1)", data_keys),
                       ("correction_case", "SELECT count(*) FROM correction_case, jsonb_array_elements(items) AS i"
                        " WHERE NOT i ? 'sealed_value' OR i -> 'sealed_value' ->> 'key_id' <> ALL($1)", data_keys)],
    }
    for service, checks in queries.items():
        connection = await asyncpg.connect(suite.owner_url(service))
        try:
            await connection.execute(f"SET search_path TO {service}")
            for label, sql, keep in checks:
                counts[label] = await connection.fetchval(sql, sorted(keep))
        finally:
            await connection.close()
    return counts


async def _each_person_once_holding_their_number(suite: RunningSuite, traffic: Traffic,
                                                 movers: list[SyntheticResident]) -> None:
    """番号法 7 ②: every person recorded once, with every move applied once, and holding one current 個人番号
    hash."""
    connection = await asyncpg.connect(suite.owner_url("identity"))
    try:
        await connection.execute("SET search_path TO identity")
        codes = [r.resident_code for r in traffic.known]
        persons = await connection.fetch(
            "SELECT resident_code, last_version FROM person WHERE resident_code = ANY($1)", codes)
        assert len(persons) == len(codes) == len(set(codes))
        moves = {r.resident_code: 0 for r in movers}
        for notification_id in traffic.applied:
            if notification_id.startswith("keys-move-"):
                moves[movers[int(notification_id.rsplit("-", 1)[1]) % len(movers)].resident_code] += 1
        assert {p["resident_code"]: p["last_version"] for p in persons if p["resident_code"] in moves} == {
            code: 1 + count for code, count in moves.items()}
        current = await connection.fetchval(
            """SELECT count(*) FROM person_key k JOIN person p ON p.id = k.person_id
               WHERE k.current AND p.resident_code = ANY($1)""", codes)
        assert current == len(codes)  # one current 個人番号 hash per person, under the one key left
    finally:
        await connection.close()


async def test_both_keys_rotate_under_live_traffic_and_every_lookup_finds_its_person(keyed: RunningSuite) -> None:
    path = _keyring_path(keyed)
    before = Keyring.load(path)
    assert before.hmac_key_ids == frozenset({"h0"})  # the file from before HMAC key ids loads as it was
    known = _residents(12, 100)
    for i, resident in enumerate(known):
        await _notify(keyed, _birth(resident, f"keys-seed-{i}"))
    sealed_notice = await _decision_notice(keyed, known[0])
    plain_notice = await _decision_notice(keyed, known[1])
    await _plaintext_as_before_sealing(keyed, plain_notice)
    _, plain_text = await _opened_notice(keyed, plain_notice)  # a document from before sealing still opens
    assert known[1].individual_number in plain_text
    requested = _residents(1, 900)[0].individual_number
    correction = await _correction_request(keyed, plain_notice, requested)
    await _correction_as_before_sealing(keyed, correction, requested)
    assert await _requested_value(keyed, correction) == requested

    traffic, stop = Traffic(known=list(known)), asyncio.Event()
    # One reader, well under the gateway's rate limit per operator (JUKI_RATE_OPERATOR_PER_SECOND).
    workers = [asyncio.create_task(_write(keyed, traffic, known, stop)),
               asyncio.create_task(_look_up(keyed, traffic, stop))]
    steps: list[str] = []
    await asyncio.sleep(1.0)
    Keyring.load(path).with_new_active_key().save(path)                      # juki keys new
    await cli_keys.rotate_data_keys(keyed, path, steps.append)               # juki keys rotate
    during = traffic.lookups
    await cli_keys.rotate_hmac(keyed, path, steps.append)                    # juki keys rotate --hmac
    await asyncio.sleep(1.5)  # traffic goes on under the new keys alone
    stop.set()
    await asyncio.gather(*workers)

    assert traffic.wrong == [], traffic.wrong
    assert during > 5 and traffic.lookups > during  # lookups ran during and after both rotations
    births = [n for n in traffic.applied if n.startswith("keys-birth-")]
    assert len(births) > 5 and all(traffic.applied[n] == 1 for n in births)
    after = Keyring.load(path)
    # The keyring file holds one data key and one HMAC key, neither of those it started with.
    assert after.key_ids == frozenset({after.active}) and before.active not in after.key_ids
    assert after.hmac_key_ids == frozenset({after.hmac_active}) and after.hmac_active != "h0"
    assert await _rows_outside(keyed, after.key_ids, after.hmac_key_ids) == {
        "individual_number": 0, "person_key": 0, "identity review_item": 0, "disclosure_document": 0,
        "correction_case": 0}

    await _each_person_once_holding_their_number(keyed, traffic, known)
    for resident in random.Random(7).sample(traffic.known, 10):
        assert (await _by_number(keyed, resident.individual_number)).record.resident_code == resident.resident_code

    # The notices open as issued, the one stored before sealing now sealed too.
    for name, resident in ((sealed_notice, known[0]), (plain_notice, known[1])):
        row = await _document_row(keyed, name)
        assert row["key_id"] == after.active and not _holds_plaintext(row, resident)
        _, text = await _opened_notice(keyed, name)
        assert resident.individual_number in text
    assert requested not in await _stored_items(keyed, correction)
    assert await _requested_value(keyed, correction) == requested
    assert any("retired" in step for step in steps)
