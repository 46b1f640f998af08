"""The initial load's COPY text: what PostgreSQL's text format reads back as the values written."""

from __future__ import annotations

import datetime as dt
import uuid

from jukilib.register.load.copy import copy_rows, copy_text


def test_each_value_is_written_in_copy_text_format_whatever_the_other_values_of_its_column() -> None:
    person = uuid.UUID("12345678-1234-4234-8234-123456789abc")
    rows = [
        ("plain", 1, True, b"\x00\xff", None, person, dt.date(2026, 12, 7)),
        ("tab\there", 22, False, b"", "\\", str(person), dt.date(1999, 1, 1)),
        ("new\nline\rand\\slash", -3, True, b"k1", 7, "text", None),
    ]
    assert copy_rows(rows) == (
        "plain\t1\tt\t\\\\x00ff\t\\N\t12345678-1234-4234-8234-123456789abc\t2026-12-07\n"
        "tab\\there\t22\tf\t\\\\x\t\\\\\t12345678-1234-4234-8234-123456789abc\t1999-01-01\n"
        "new\\nline\\rand\\\\slash\t-3\tt\t\\\\x6b31\t7\ttext\t\\N\n"
    )


def test_a_column_with_one_escaped_value_escapes_that_value_only() -> None:
    rows = [("a",), ("b\tc",), ("d",)]
    assert copy_rows(rows) == "a\nb\\tc\nd\n"
    assert copy_text("b\tc") == "b\\tc"


def test_no_rows_is_no_text() -> None:
    assert copy_rows([]) == ""
