"""`juki purposes list [--as CALLER]`: the gateway's catalogue, read with the gateway's loader, no suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from juki_services.gateway.policy import DEFAULT_CATALOGUE
from jukitools import cli


def _blocks(out: str) -> dict[str, str]:
    """The printed purposes by code (each a block after a blank line)."""
    return {block.split()[0]: block for block in out.split("\n\n")[1:]}


def test_a_sample_caller_sees_only_the_purposes_it_may_declare(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["purposes", "list", "--as", "kyoiku-iinkai"]) == 0
    out = capsys.readouterr().out
    assert ": 2 purpose(s) kyoiku-iinkai (群馬県教育委員会) may declare on " in out.splitlines()[0]
    purposes = _blocks(out)
    assert set(purposes) == {"EDU-LICENCE-30-15-2-1", "EDU-SCHOLARSHIP-30-15-2-2"}
    assert purposes["EDU-LICENCE-30-15-2-1"].splitlines()[1:] == [
        "  legal basis:  住基法30-15②(1) 別表第六",
        "  affair:       教育職員免許状に関する事務 (example)",
        "  recipients:   kyoiku-iinkai",
        "  methods:      juki.identity.v1.IdentityService/LookupResident",
        "  fields:       name, state, record.full_name, record.birth_date, record.address",
        "  operators:    provision_clerk",
        "  records:      per call 1, per day 500, per operator per day 200",
        "  valid:        from 2015-06-01, no end date",
        "  case reference required (x-juki-case-reference)",
    ]


def test_a_municipality_cs_maps_to_its_organisation_and_declares_system_purposes(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["purposes", "list", "--as", "maebashi-cs"]) == 0
    out = capsys.readouterr().out
    assert "102016 (前橋市)" in out.splitlines()[0]
    notify = _blocks(out)["CS-NOTIFY-30-6"]
    assert "  recipients:   kind:municipality" in notify and "  operators:    none (calls of systems)" in notify
    assert "EDU-SCHOLARSHIP-30-15-2-2" not in out


def test_without_a_caller_every_purpose_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["purposes", "list"]) == 0
    out = capsys.readouterr().out
    assert DEFAULT_CATALOGUE.read_text(encoding="utf-8").count("[[purposes]]") == len(_blocks(out))


def test_an_unknown_caller_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["purposes", "list", "--as", "no-such-caller"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert "unknown caller 'no-such-caller'" in captured.err


def test_the_gateways_catalogue_variable_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    catalogue = tmp_path / "purposes.toml"
    catalogue.write_text('version = "test-1"\n[[organizations]]\ncode = "kyoiku-iinkai"\nname = "教育委員会"\n'
                         'kind = "executive_organ"\n[[purposes]]\ncode = "ONLY-ONE"\nlegal_basis = "住基法30-15"\n'
                         'affair = "test"\nrecipients = ["kyoiku-iinkai"]\n'
                         'methods = ["juki.identity.v1.IdentityService/LookupResident"]\n'
                         'fields = ["record.full_name"]\nvalid_from = 2015-06-01\nvalid_until = 2015-06-30\n'
                         'max_records_per_call = 3\nmax_records_per_day = 30\noperator_roles = ["provision_clerk"]\n',
                         encoding="utf-8")
    monkeypatch.setenv("JUKI_POLICY_FILE", str(catalogue))
    assert cli.main(["purposes", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"catalogue test-1 ({catalogue})")
    assert "  valid:        from 2015-06-01 to 2015-06-30" in out and "  records:      per call 3" in out
    assert cli.main(["purposes", "list", "--as", "kyoiku-iinkai"]) == 0  # no longer in effect
    assert "ONLY-ONE" not in capsys.readouterr().out
    catalogue.write_text('version = "test-2"\n[[purposes]]\ncode = "BROKEN"\n', encoding="utf-8")
    assert cli.main(["purposes", "list"]) == 2
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and "purpose BROKEN" in error
