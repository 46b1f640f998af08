"""Both registers behind one small adapter, so that the engine's behaviour is specified once and
proven for the identity file and the annex file alike."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from juki_services.annex import app as annex_app
from juki_services.annex.app import REGISTER as ANNEX
from juki_services.identity import app as identity_app
from juki_services.identity.app import REGISTER as IDENTITY
from jukilib.db.bootstrap import ServiceDatabase
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.domain.codes import individual_number_check_digit, resident_code_check_digit
from jukilib.register.api import RegisterApi
from jukilib.register.wiring import RegisterService

MAEBASHI, TAKASAKI = "102016", "102024"
NOTIFY_TIME = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
_serial = itertools.count(1)


def resident_code(serial: int) -> str:
    base = f"{7_000_000_000 + serial:010d}"
    return base + str(resident_code_check_digit(base))


def individual_number(serial: int) -> str:
    base = f"{50_000_000_000 + serial:011d}"
    return base + str(individual_number_check_digit(base))


@dataclass
class Person:
    """The varying items of one synthetic person."""

    code: str
    number: str
    name: str = "上野　太郎"
    kana: str = "ウエノ　タロウ"
    birth: tuple[int, int, int] = (1980, 5, 17)
    sex: str = "1"
    address: str = "群馬県前橋市大手町1丁目1番1号"
    municipality: str = MAEBASHI
    """The municipality of the address (identity) or of the 本籍地 (annex): the one that notifies."""


def new_person(**overrides: Any) -> Person:
    serial = next(_serial)
    return Person(code=resident_code(serial), number=individual_number(serial), **overrides)


@dataclass(frozen=True)
class Register:
    """One register and how to build its notifications."""

    name: str
    service: RegisterService

    def api(self, config: Any, database: Database) -> RegisterApi:
        """The register's API as its service builds it (with its hooks: identity's 個人番号 at rest)."""
        app: Any = identity_app if self.name == "identity" else annex_app
        api: RegisterApi = app.api(config, database)
        return api

    def request(self, person: Person, notification_id: str, *, kind: int = register_pb2.CHANGE_KIND_RECORD,
                reason: int = register_pb2.CHANGE_REASON_DOMESTIC_MOVE_IN, event: dt.date = dt.date(2026, 4, 1),
                notify_time: dt.datetime = NOTIFY_TIME, previous_code: str = "") -> Any:
        change = register_pb2.ChangeInfo(kind=kind, reason=reason)
        change.event_date.year, change.event_date.month, change.event_date.day = event.year, event.month, event.day
        change.notify_time.FromDatetime(notify_time)
        year, month, day = person.birth
        birth = register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_DAY, year=year, month=month,
                                         day=day, original_text=f"{year}-{month}-{day}")
        if self.name == "identity":
            record: Any = identity_pb2.IdentityRecord(
                resident_code=person.code, individual_number=person.number, full_name=person.name,
                full_name_kana=person.kana, birth_date=birth, sex_code=person.sex, address=person.address,
                address_municipality_code=person.municipality)
            return identity_pb2.ApplyNotificationRequest(notification_id=notification_id, change=change,
                                                         record=record, previous_resident_code=previous_code)
        annex_record = annex_pb2.AnnexRecord(
            resident_code=person.code, full_name=person.name, full_name_kana=person.kana, birth_date=birth,
            sex_code=person.sex, address=person.address, domicile_municipality_code=person.municipality)
        return annex_pb2.ApplyNotificationRequest(notification_id=notification_id, change=change,
                                                  record=annex_record, previous_resident_code=previous_code)

    def lookup(self, code: str, as_of: dt.date | None = None, by_receipt: bool = False) -> Any:
        request_type = identity_pb2.LookupResidentRequest if self.name == "identity" else \
            annex_pb2.LookupAnnexResidentRequest
        request = request_type(resident_code=code)
        if as_of is not None:
            request.as_of_date.year = as_of.year
            request.as_of_date.month = as_of.month
            request.as_of_date.day = as_of.day
            basis = register_pb2.AS_OF_BASIS_RECEIPT if by_receipt else register_pb2.AS_OF_BASIS_EVENT_DATE
            request.as_of_basis = basis
        return request


REGISTERS = {"identity": Register("identity", IDENTITY), "annex": Register("annex", ANNEX)}


async def apply(api: RegisterApi, request: Any, municipality: str = MAEBASHI) -> Any:
    """`request` applied as notified by the CS of `municipality`."""
    return await api.apply(request, municipality)


@asynccontextmanager
async def open_register(name: str, admin_url: str, pki: DevPki, home: Path, *,
                        pool_max: int = 10) -> AsyncIterator[tuple[Register, RegisterApi, Database, ServiceDatabase]]:
    """A register's API on a fresh database, as its service builds it (no relay, no server)."""
    from tests.conftest import fresh_database, service_config

    chosen = REGISTERS[name]
    databases = await fresh_database(admin_url)
    config = service_config(name, pki, databases[name], home, {"agency": "127.0.0.1:1"})
    database = Database(dataclasses.replace(config.common.database, pool_max=pool_max))
    await database.connect()
    try:
        yield chosen, chosen.api(config, database), database, databases[name]
    finally:
        await database.close()
