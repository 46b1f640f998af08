"""Field rules of the identity file's record (住基法 30-6 ①: 4 items, 個人番号, 住民票コード)."""

from __future__ import annotations

from typing import Any

from jukilib.domain import codes
from jukilib.domain.municipalities import MunicipalityTable
from jukilib.errors import Violations

NAME_MAX = 100
ADDRESS_MAX = 200


def validate_identity_record(record: Any, violations: Violations, municipalities: MunicipalityTable,
                             notifier: str) -> None:
    """Add a violation for every bad field of `record` notified by the municipality `notifier` (paths under
    `record.`; which municipality may notify about whom is the register's rule, 住基法 30-6 ①)."""
    # 個人番号: check digit per 総務省令第85号 第5条; a wrong one is always refused.
    violations.extend("record.individual_number", codes.individual_number_problems(record.individual_number))
    violations.required_text("record.full_name", record.full_name, max_length=NAME_MAX)
    violations.kana("record.full_name_kana", record.full_name_kana)
    violations.optional_text("record.former_surname", record.former_surname, max_length=NAME_MAX)
    violations.optional_text("record.alias", record.alias, max_length=NAME_MAX)
    if not record.HasField("birth_date"):
        violations.add("record.birth_date", "is required", "REQUIRED_FIELD")
    else:
        violations.partial_date("record.birth_date", record.birth_date)
    violations.sex_code("record.sex_code", record.sex_code)
    violations.required_text("record.address", record.address, max_length=ADDRESS_MAX)
    # The identity file holds the residents of this prefecture's municipalities.
    violations.municipality("record.address_municipality_code", record.address_municipality_code,
                            municipalities)
