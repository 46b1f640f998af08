"""`juki audit`: the operation log for auditors — verify its chain, print the misuse review, rotate its key.

`verify` walks the hash chain (the gateway's runtime role), checks every signed checkpoint against the
public keyring (each key with its validity period), and holds the chain to the journal of checkpoints kept
outside the database (`juki_services.gateway.checkpoints`): a log that ends before the journal's newest
checkpoint, or differs from it, was shortened or rewritten. Settings: an option, else the environment, else
the running suite's home (`.juki/`), as the operators' commands find theirs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jukilib.config import UsageError
from jukitools.local import AUDIT_HASH_KEY, CHECKPOINT_DIR, OPERATION_LOG_KEYRING, OPERATION_LOG_PUBLIC_KEY, LocalSuite
from jukitools.runner import connected

ROTATION_GRACE = dt.timedelta(seconds=10)
"""How long the old key stays valid after the new one is in place: a checkpoint being signed while the file
is replaced is still accepted; after that, the old key vouches for nothing new."""


def add_parser(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the operation log: verify its chain and checkpoints, print the "
                                              "misuse review, rotate its signing key")
    audit.add_argument("action", choices=("verify", "report", "rotate-key", "who-could", "catalogues", "hash",
                                          "review", "reviews"),
                       help="verify: check the hash chain, the signed checkpoints and the journal kept outside "
                            "the database (exit 1 naming the first bad sequence); report: print the misuse "
                            "review; rotate-key: a new signing key, the old one kept in the public keyring; "
                            "who-could: the operators who could read resident data on --date, from the log; "
                            "catalogues: every policy catalogue the gateway loaded or refused, or with --sha256 "
                            "the text of one, checked against its digest; hash: the keyed hash a search's "
                            "--item/--value has in the log (the audit hash key: JUKI_AUDIT_HASH_KEY, else "
                            ".juki/audit-hash.key)")
    audit.add_argument("--start", default="", help="review: start of the period reviewed (ISO 8601, JST when no zone)")
    audit.add_argument("--end", default="", help="review: end of the period reviewed (exclusive)")
    audit.add_argument("--findings", default="", help="review: what was found (say 'none' when nothing)")
    audit.add_argument("--follow-up", default="", help="review: what follows from it")
    audit.add_argument("--entry", type=int, action="append", default=[],
                       help="review: an operation-log sequence number the findings refer to (repeat)")
    audit.add_argument("--as", dest="caller", default="auditor", help="review(s): client certificate")
    audit.add_argument("--operator", default=os.environ.get("JUKI_OPERATOR", "kansa-0001"),
                       help="review(s): the auditor who logged in (default JUKI_OPERATOR, else kansa-0001)")
    audit.add_argument("--item", default="full_name", help="hash: the search item (full_name, full_name_kana, "
                                                          "birth_date as YYYY-MM-DD/PRECISION, sex_code)")
    audit.add_argument("--value", default="", help="hash: the value to look for in the log")
    audit.add_argument("--all", action="store_true", help="report: every line of every section")
    audit.add_argument("--sha256", default="", help="catalogues: print the catalogue with this digest")
    audit.add_argument("--date", type=dt.date.fromisoformat, default=None,
                       help="who-could: the Japanese calendar day, YYYY-MM-DD (default: today in Japan)")
    audit.add_argument("--days", type=int, default=7, help="report: the period reviewed, in days up to now "
                                                            "(default: %(default)s)")
    audit.add_argument("--public-key", default="",
                       help="verify: a PEM public key or a keyring (JSON) of keys with validity periods "
                            "(default: JUKI_OPERATION_LOG_PUBLIC_KEY, else .juki/operation-log-keys.json, "
                            "else .juki/operation-log.pub)")
    audit.add_argument("--checkpoints", default="",
                       help="verify: the journal of checkpoints kept outside the database, a file or a "
                            "directory of copies (default: JUKI_CHECKPOINT_DIR, else .juki/checkpoints)")


async def run(args: argparse.Namespace) -> int:
    suite = LocalSuite.of(args.home)
    if args.action == "rotate-key":
        return await rotate_key(suite)
    if args.action in ("review", "reviews"):
        return await _review(suite, args)
    if args.action == "hash":
        return _hash(suite, args)
    url = suite.database_url("gateway")
    reads: dict[str, Callable[[], Awaitable[int]]] = {
        "report": lambda: _audit_report(url, args.days, args.all),
        "who-could": lambda: _who_could(url, args.date),
        "catalogues": lambda: _catalogues(url, args.sha256),
        "verify": lambda: _verify(suite, url, args),
    }
    return await reads[args.action]()


def _hash(suite: LocalSuite, args: argparse.Namespace) -> int:
    from juki_services.gateway.search_log import AuditHashKey

    key = AuditHashKey.load(suite.file("JUKI_AUDIT_HASH_KEY", AUDIT_HASH_KEY))
    print(key.hash(args.item, args.value))
    return 0


async def _who_could(url: str, day: dt.date | None) -> int:
    """`juki audit who-could`: from the operation log alone (verify vouches for the log), the operators who
    could read resident data on the day, with their roles; the PIA's 取扱者数 is their number."""
    from juki_services.gateway.who_could import changes_of, unlogged, who_could
    from jukilib.domain.dates import JAPAN

    day = day or dt.datetime.now(JAPAN).date()
    async with connected(url, "gateway") as connection:
        rows = await connection.fetch(
            "SELECT sequence, time, status, detail FROM operation_log WHERE detail <> '' ORDER BY sequence")
        registered = [r["operator_id"] for r in await connection.fetch("SELECT operator_id FROM operator")]
    changes = changes_of(rows)
    holders = who_could(changes, day)
    print(f"Operators who could read resident data on {day.isoformat()} (JST), from the operation log: "
          f"{len(holders)} (取扱者数)")
    for holder in holders:
        print(f"  {holder.organization}/{holder.operator_id}: {', '.join(sorted(holder.roles))}")
    for organization, count in sorted(_by_organization(holders).items()):
        print(f"  {organization}: {count}")
    missing = unlogged(changes, registered)
    if missing:
        print(f"operators in the registry whom the log never registered: {', '.join(missing)} (written behind "
              "the log's back)", file=sys.stderr)
        return 1
    return 0


async def _catalogues(url: str, digest: str) -> int:
    """`juki audit catalogues`: the catalogue versions of the log, or one catalogue's text, which must hash to
    the digest the log names (a copy that does not is reported, exit 1)."""
    import hashlib

    from juki.gateway.v1.operation_log_pb2 import DECISION_ALLOWED
    from jukilib.domain.dates import JAPAN

    async with connected(url, "gateway") as connection:
        if digest:
            content = await connection.fetchval("SELECT content FROM policy_catalogue WHERE sha256 = $1", digest)
        else:
            rows = await connection.fetch("SELECT sequence, time, decision, reason FROM operation_log "
                                          "WHERE method = 'policy-catalogue/load' ORDER BY sequence")
    if not digest:
        for row in rows:
            outcome = "loaded " if row["decision"] == DECISION_ALLOWED else "refused"
            print(f"#{row['sequence']} {row['time'].astimezone(JAPAN):%Y-%m-%d %H:%M} JST {outcome} {row['reason']}")
        return 0
    if content is None:
        print(f"no catalogue with sha256 {digest} is kept", file=sys.stderr)
        return 1
    if hashlib.sha256(content.encode("utf-8")).hexdigest() != digest:
        print(f"the catalogue kept as {digest} does not hash to it: the copy was changed", file=sys.stderr)
        return 1
    print(content, end="")
    return 0


def _by_organization(holders: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for holder in holders:
        counts[holder.organization] = counts.get(holder.organization, 0) + 1
    return counts


async def _review(suite: LocalSuite, args: argparse.Namespace) -> int:
    """`juki audit review`: record a review of the operation log (自己点検, 内部監査) through the gateway as
    the logged-in auditor; `juki audit reviews` lists them."""
    from juki.gateway.v1 import audit_records_pb2 as pb
    from jukitools.cli_oversight import _moment, call

    if args.action == "reviews":
        return await call(suite, args, "ListAuditReviews", pb.ListAuditReviewsRequest(page_size=500))
    review = pb.AuditReview(findings=args.findings, follow_up=args.follow_up, entry_sequences=args.entry)
    if args.start:
        review.start_time.FromDatetime(_moment(args.start))
    if args.end:
        review.end_time.FromDatetime(_moment(args.end))
    return await call(suite, args, "CreateAuditReview", pb.CreateAuditReviewRequest(audit_review=review))


def keyring_file(suite: LocalSuite, option: str) -> Path:
    keyring = suite.home / OPERATION_LOG_KEYRING
    if option or suite.has_explicit("JUKI_OPERATION_LOG_PUBLIC_KEY") or not keyring.is_file():
        return suite.file("JUKI_OPERATION_LOG_PUBLIC_KEY", OPERATION_LOG_PUBLIC_KEY, option)
    return keyring


def journal_path(suite: LocalSuite, option: str) -> Path | None:
    explicit = option or suite.environ.get("JUKI_CHECKPOINT_DIR", "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise UsageError(f"no such file or directory: {path} (the journal of checkpoints)")
        return path
    path = suite.home / CHECKPOINT_DIR
    return path if path.exists() else None


async def _verify(suite: LocalSuite, url: str, args: argparse.Namespace) -> int:
    from juki_services.gateway.chain import PublicKeyring, verify
    from juki_services.gateway.checkpoints import JournalError, read_journal

    keyring = PublicKeyring.load(keyring_file(suite, args.public_key))
    journal = journal_path(suite, args.checkpoints)
    try:
        external = read_journal(journal) if journal is not None else []
    except JournalError as error:
        print(f"the journal of checkpoints cannot be read: {error}", file=sys.stderr)
        return 1
    async with connected(url, "gateway") as connection:
        verdict = await verify(connection, keyring, external)
    if not verdict.ok:
        print(f"operation log broken at sequence {verdict.first_bad_sequence}: {verdict.problem}", file=sys.stderr)
        return 1
    print(f"operation log intact: {verdict.records} record(s), {verdict.checkpoints} signed checkpoint(s)")
    for lost in verdict.lost:  # reported, not hidden: a signed restore shortened the log
        print(f"restore recorded at record {lost.at_sequence} ({lost.restored_at.isoformat(timespec='seconds')}, "
              f"signed): records {lost.first}–{lost.last} named by the journal kept outside the database before it "
              f"were lost with the restore ({lost.checkpoints} checkpoint(s) of theirs set aside)")
    if external:
        print(f"held to {verdict.external} checkpoint(s) kept outside the database, the newest naming record "
              f"{external[-1].sequence}")
    else:
        print("no journal of checkpoints kept outside the database was given or found: the end of the log is "
              "vouched for by the database only", file=sys.stderr)
    return 0


async def rotate_key(suite: LocalSuite) -> int:
    """A new signing key in place of the old one (which the running gateway reads again at its next
    checkpoint and records the change in the chain); the public keyring keeps the old key, valid until now.
    A maintenance action (issue 19): its intent and outcome are in the operation log, by key id."""
    from juki_services.gateway.chain import PublicKeyring
    from jukitools.maintenance_log import logged_action

    key_file = suite.file("JUKI_OPERATION_LOG_KEY", "operation-log.key")
    keyring_path = suite.home / OPERATION_LOG_KEYRING
    keyring = PublicKeyring.load(keyring_path if keyring_path.is_file() else key_file.with_suffix(".pub"))
    async with logged_action(suite, "operation-log-rotate-signing-key",
                             keys_before=sorted(keyring.entries)) as outcome:
        new_id = _write_new_key(key_file, keyring_path, keyring)
        outcome.detail["new_key"] = new_id
    return 0


def _write_new_key(key_file: Path, keyring_path: Path, keyring: Any) -> str:
    """The new signing key written, the public keyring extended; returns the new key's id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from juki_services.gateway.chain import PublicKeyEntry, PublicKeyring, key_id_of
    from jukitools.local import write_private_bytes

    new = Ed25519PrivateKey.generate()
    started = dt.datetime.now(dt.UTC)
    write_private_bytes(key_file, new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    retired = dt.datetime.now(dt.UTC) + ROTATION_GRACE
    entries = {key_id: PublicKeyEntry(entry.public, entry.valid_from, entry.valid_until or retired)
               for key_id, entry in keyring.entries.items()}
    entries[key_id_of(new.public_key())] = PublicKeyEntry(new.public_key(), started)
    keyring_path.write_text(PublicKeyring(entries).to_json(), encoding="utf-8")
    key_file.with_suffix(".pub").write_bytes(new.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    print(f"operation-log signing key {key_id_of(new.public_key())} in {key_file}; public keyring {keyring_path} "
          f"({len(entries)} key(s))")
    return str(key_id_of(new.public_key()))


async def _audit_report(url: str, days: int, everything: bool = False) -> int:
    """`juki audit report`: the misuse review of the last `days` days, printable; every time in Japan time
    (JST), calls of systems (no operator) apart from the operators' work. Each section prints its first 20
    lines (every line with `--all`) and says how many more there are: nothing is left out silently."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from juki_services.gateway.oplog import Review, misuse_report
    from jukilib.domain.dates import JAPAN

    def jst(time: dt.datetime | Timestamp, form: str = "%Y-%m-%d %H:%M") -> str:
        moment = time.ToDatetime(dt.UTC) if isinstance(time, Timestamp) else time
        return f"{moment.astimezone(JAPAN):{form}} JST"

    end = dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=days)
    async with connected(url, "gateway") as connection:
        report = await misuse_report(connection, review := Review(start, end, 8, 19, 3, 10))
    omitted = {o.section: o.count for o in report.omitted}

    def section(title: str, name: str, items: Any, line: Any) -> None:
        total = len(items) + omitted.get(name, 0)
        print(f"\n{title}: {total}")
        shown = items if everything else items[:20]
        for item in shown:
            print(f"  {line(item)}")
        if total > len(shown):
            print(f"  … and {total - len(shown)} more"
                  + (" (narrow the period to list them)" if name in omitted else " (--all lists them)"))

    print(f"Misuse review, {jst(start)} to {jst(end)}")
    section("Busiest operator-hours", "volumes", report.volumes,
            lambda v: f"{jst(v.hour, '%Y-%m-%d %H:00')}  {v.organization}/{v.operator}  {v.calls} calls, "
                      f"{v.residents} residents")
    section(f"Off-hours calls of operators (before {review.office_start:02d}:00, from {review.office_end:02d}:00, "
            "Saturdays, Sundays, national holidays, 12/29-1/3)", "off_hours", report.off_hours,
            lambda e: f"#{e.sequence} {jst(e.time)} {e.organization}/{e.operator} {e.method}")
    section("Residents looked up by many operators", "residents_of_interest", report.residents_of_interest,
            lambda r: f"{r.resident_code}: {r.operators} operators, {r.calls} calls")
    section("Searches with many candidates", "broad_searches", report.broad_searches,
            lambda e: f"#{e.sequence} {jst(e.time)} {e.organization}/{e.operator or '-'} "
                      f"{len(e.resident_codes)} candidates")
    section("Searches that found nobody", "empty_searches", report.empty_searches,
            lambda e: f"#{e.sequence} {jst(e.time)} {e.organization}/{e.operator or '-'} {e.method}")
    section("Denied attempts", "denied", report.denied,
            lambda e: f"#{e.sequence} {jst(e.time)} {e.organization}/{e.operator or '-'} {e.method} {e.reason}")
    section("Calls of systems (no operator; never volumes or off-hours use), per organisation and method",
            "system_calls", report.system_calls,
            lambda c: f"{c.organization} {c.method}  {c.calls} calls, {c.residents} residents, "
                      f"{jst(c.first_time)} to {jst(c.last_time)}")
    return 0
