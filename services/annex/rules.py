"""Field rules of the annex file's record (住基法 Art. 17 items 2, 3, 5, 6, 7; 30-41)."""

from __future__ import annotations

from typing import Any

from jukilib.domain.municipalities import MunicipalityTable
from jukilib.errors import Violations

NAME_MAX = 100
ADDRESS_MAX = 200


def validate_annex_record(record: Any, violations: Violations, municipalities: MunicipalityTable,
                          notifier: str) -> None:
    """Add a violation for every bad field of `record` notified by the municipality `notifier` (paths under
    `record.`)."""
    violations.required_text("record.full_name", record.full_name, max_length=NAME_MAX)
    violations.kana("record.full_name_kana", record.full_name_kana)
    _address(record, violations)
    if not record.HasField("birth_date"):
        violations.add("record.birth_date", "is required", "REQUIRED_FIELD")
    else:
        violations.partial_date("record.birth_date", record.birth_date)
    violations.sex_code("record.sex_code", record.sex_code)
    violations.municipality("record.domicile_municipality_code", record.domicile_municipality_code,
                            municipalities)
    # 30-41 ①: the municipality of the 本籍地 keeps the 附票 and is the one that notifies.
    if record.domicile_municipality_code and record.domicile_municipality_code != notifier:
        violations.add("record.domicile_municipality_code", "must be the notifying municipality")


def _address(record: Any, violations: Violations) -> None:
    # Art. 17 item 3/4: for a 国外転出者 the address is replaced by the statement that the person moved
    # abroad, and the address date is the planned departure date.
    if record.overseas_emigrant:
        if record.address:
            violations.add("record.address", "must be empty for a person who moved abroad")
        if not record.HasField("address_date"):
            violations.add("record.address_date", "is required (planned departure date) for a person who moved abroad",
                           "REQUIRED_FIELD")
    else:
        violations.required_text("record.address", record.address, max_length=ADDRESS_MAX)
    if record.HasField("address_date"):
        violations.calendar_date("record.address_date", record.address_date)
