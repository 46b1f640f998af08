"""`juki purposes list [--as CALLER]`: the purposes of use in the gateway's policy catalogue.

The catalogue is data shipped with the project (`services/gateway/purposes.toml`, or the file named by
`JUKI_POLICY_FILE`, as the gateway reads it), loaded with the gateway's own loader and checks, so the
list is exactly what the gateway decides on. No running suite is needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jukilib.domain.dates import japan_date

if TYPE_CHECKING:
    from juki_services.gateway.policy import Purpose

POLICY_FILE_VARIABLE = "JUKI_POLICY_FILE"


def add_parser(commands: Any) -> None:
    purposes = commands.add_parser("purposes", help="the purposes of use of the gateway's policy catalogue")
    actions = purposes.add_subparsers(dest="purposes_action", required=True)
    listing = actions.add_parser(
        "list",
        help="list purposes: legal basis, recipients, methods, fields, caps, validity",
        description=f"The catalogue is {POLICY_FILE_VARIABLE} when set, else the one shipped with the gateway.")
    listing.add_argument("--as", dest="caller", default=None, metavar="CALLER",
                         help="only the purposes this caller may declare today: a sample caller (e.g. "
                              "kyoiku-iinkai, maebashi-cs, cs-102024) or an organisation code of the catalogue "
                              "(default: every purpose)")


def command(args: argparse.Namespace) -> int:
    from juki_services.gateway.policy import DEFAULT_CATALOGUE, CatalogueError, load_catalogue
    from jukilib.domain.municipalities import gunma_municipalities
    from jukitools.suite import all_callers

    path = Path(os.environ.get(POLICY_FILE_VARIABLE, "").strip() or DEFAULT_CATALOGUE)
    try:
        catalogue = load_catalogue(path, gunma_municipalities())
    except (CatalogueError, OSError, UnicodeDecodeError) as error:
        print(f"juki: policy catalogue {path}: {error}", file=sys.stderr)
        return 2
    purposes = sorted(catalogue.purposes.values(), key=lambda p: p.code)
    heading = f"catalogue {catalogue.version} ({path})"
    if args.caller is not None:
        organization = catalogue.organizations.get(all_callers().get(args.caller, args.caller))
        if organization is None:
            print(f"juki: unknown caller {args.caller!r}: neither a sample caller nor an organisation of the "
                  f"catalogue", file=sys.stderr)
            return 2
        today = japan_date(dt.datetime.now(dt.UTC))
        purposes = [p for p in purposes if p.grants(organization) and p.in_effect(today)]
        heading += f": {len(purposes)} purpose(s) {organization.code} ({organization.name}) may declare on {today}"
    print(heading)
    for purpose in purposes:
        print()
        print(format_purpose(purpose))
    return 0


def format_purpose(purpose: Purpose) -> str:
    """One purpose, a line per property."""
    caps = [f"{label} {value}" for label, value in (
        ("per call", purpose.max_records_per_call), ("per day", purpose.max_records_per_day),
        ("per operator per day", purpose.max_records_per_operator_per_day)) if value is not None]
    roles = ", ".join(sorted(purpose.operator_roles)) or "none (calls of systems)"
    lines = [
        f"{purpose.code}{'  (example entry, not law)' if purpose.example else ''}",
        f"  legal basis:  {purpose.legal_basis}",
        f"  affair:       {purpose.affair}",
        f"  recipients:   {', '.join(sorted(purpose.recipients))}",
        f"  methods:      {', '.join(sorted(purpose.methods))}",
        f"  fields:       {', '.join(purpose.fields) or 'none (workflow methods: no record answered)'}",
        f"  operators:    {roles}",
        f"  records:      {', '.join(caps) or 'no cap'}",
        f"  valid:        from {purpose.valid_from}"
        f"{f' to {purpose.valid_until}' if purpose.valid_until else ', no end date'}",
    ]
    if purpose.case_reference_required:
        lines.append("  case reference required (x-juki-case-reference)")
    if purpose.individual_number_basis:
        lines.append(f"  個人番号 under {purpose.individual_number_basis}")
    if purpose.overseas_emigrant_only:
        lines.append("  国外転出者 only (住基法 30-44-6)")
    if purpose.subject_access:
        lines.append("  the person's own disclosure and correction (住基法 30-44-13): annex records of any person, "
                     "never the 住民票コード")
    return "\n".join(lines)
