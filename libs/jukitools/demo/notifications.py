"""Change notifications built from synthetic residents: the demo data and the sample calls."""

from __future__ import annotations

import datetime as dt

from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from jukitools.demo.residents import SyntheticResident


def _change(kind: register_pb2.ChangeKind.ValueType, reason: register_pb2.ChangeReason.ValueType,
            event_date: dt.date, notify_time: dt.datetime | None) -> register_pb2.ChangeInfo:
    change = register_pb2.ChangeInfo(kind=kind, reason=reason)
    change.event_date.year, change.event_date.month, change.event_date.day = (
        event_date.year, event_date.month, event_date.day)
    change.notify_time.FromDatetime(notify_time or dt.datetime.now(dt.UTC))
    return change


def _birth_date(resident: SyntheticResident) -> register_pb2.PartialDate:
    born = resident.birth_date
    return register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_DAY, year=born.year, month=born.month,
                                    day=born.day, original_text=born.isoformat())


def birth_notification(resident: SyntheticResident, notification_id: str, event_date: dt.date,
                       notify_time: dt.datetime | None = None) -> identity_pb2.ApplyNotificationRequest:
    """A 30-6 notification recording `resident` (記載, 国内転入)."""
    record = identity_pb2.IdentityRecord(
        resident_code=resident.resident_code, individual_number=resident.individual_number,
        full_name=resident.full_name, full_name_kana=resident.full_name_kana, kana_confirmed=True,
        birth_date=_birth_date(resident), sex_code=resident.sex_code, address=resident.address,
        address_municipality_code=resident.municipality_code,
    )
    return identity_pb2.ApplyNotificationRequest(
        notification_id=notification_id,
        change=_change(register_pb2.CHANGE_KIND_RECORD, register_pb2.CHANGE_REASON_DOMESTIC_MOVE_IN, event_date,
                       notify_time),
        record=record,
    )


def annex_notification(
    resident: SyntheticResident, notification_id: str, event_date: dt.date, *, moved_abroad: bool,
    notify_time: dt.datetime | None = None,
) -> annex_pb2.ApplyNotificationRequest:
    """A 30-41 notification recording `resident`'s 附票 (domicile = the resident's municipality)."""
    record = annex_pb2.AnnexRecord(
        resident_code=resident.resident_code, full_name=resident.full_name,
        full_name_kana=resident.full_name_kana, kana_confirmed=True, birth_date=_birth_date(resident),
        sex_code=resident.sex_code, domicile_municipality_code=resident.municipality_code,
    )
    if moved_abroad:
        record.overseas_emigrant = True
        departure = event_date + dt.timedelta(days=14)
        record.address_date.year, record.address_date.month, record.address_date.day = (
            departure.year, departure.month, departure.day)
    else:
        record.address = resident.address
    return annex_pb2.ApplyNotificationRequest(
        notification_id=notification_id,
        change=_change(register_pb2.CHANGE_KIND_RECORD, register_pb2.CHANGE_REASON_BIRTH, event_date, notify_time),
        record=record,
    )
