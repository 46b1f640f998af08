"""`juki reconcile [--since TIME] [--apply] [--register identity|annex|both]`: after a restore, nothing silently
lost (住基法 30-6 ④ / 30-41 ④ with 30-7 / 30-42; issue 20).

A restore to T loses what the registers applied after T. What they forwarded to the agency before the loss is
in the agency's copy: the command asks the agency for every change of the file it received since the point
(`ListReceivedChanges`, with the register's own client certificate: the agency lists a file's changes to that
file's register only), and compares by notification ((municipality, notification id), the idempotency key's
content) with what the register holds:

- the agency holds it, the register does not: lost with the restore; `--apply` applies it again from the
  agency's copy through the register's one write path (`RegisterEngine.apply_many`: `decide`, `rows`,
  `store`), as the notifying municipality's notification: the same notification id, municipality, change
  information and record, the original receipt time and the person's id. The request is rebuilt as the
  municipality sent it (notification id, kind, reason, event date, notification time, record, previous
  住民票コード), so its digest is the resend's: the municipality resending it later is answered with the
  version, never applied twice. The re-applied version's outbox row has the key the agency already holds it
  under (`Notification.agency_key`, whatever its form): the relay sends it, and the agency answers duplicate;
- the register holds it (written since the point), the agency does not: the outbox sends it (its state is
  shown: pending, dead — `juki outbox retry` —, or delivered, which would mean the agency lost it);
- applied after T and never forwarded: lost to both. Only the municipalities hold them: the command prints,
  per municipality, the window (T → the restore) whose acknowledged notifications it must send again, with
  the same ids (each answered once, a repeat never applied twice).

The point: `--since`, else the target of the newest restore in the operation log. The restore is what loses
changes, and its target is exactly where the register's knowledge ends: a later point would miss changes, an
earlier one costs only a longer comparison. A restore to the end of the archived WAL has no target time (what
it lost is the tail that was never archived, whose start juki cannot know): then `--since` is required.

Output: counts, and the register's references (`residents/{id}`) of the persons concerned in a file readable by
the operator only (0600, `--output`, else `.juki/reconcile/<time>.json`): never a name, never a 住民票コード.
The run is a maintenance action in the operation log (`maintenance/reconcile`: who, since, counts found and
applied; no personal data).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from jukilib.config import TlsConfig, UsageError
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.errors import JukiError
from jukilib.register import holdings
from jukilib.register.model import Notification
from jukilib.register.rows import outbox_key
from jukitools.local import KEYRING, LocalSuite, write_private_json
from jukitools.maintenance_log import logged_action
from jukitools.runner import Unreachable, connected

REGISTERS = ("identity", "annex")
FILES = {"identity": agency_pb2.FILE_IDENTITY, "annex": agency_pb2.FILE_ANNEX}
REQUEST_TYPES: dict[str, Any] = {"identity": identity_pb2.ApplyNotificationRequest,
                                 "annex": annex_pb2.ApplyNotificationRequest}
RESIDENT_CODE_CHANGES = frozenset({register_pb2.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST,
                                   register_pb2.CHANGE_REASON_RESIDENT_CODE_EX_OFFICIO_RECORD})
PAGE = 1000
APPLY_CHUNK = 500
RESTORE = "maintenance/restore"


def add_parser(commands: Any) -> None:
    reconcile = commands.add_parser(
        "reconcile", help="after a restore: compare each register with the agency's copy since a point, list what "
                          "either lacks (counts; the persons' references in a 0600 file), --apply re-applies what "
                          "the agency holds and the register lost")
    reconcile.add_argument("--since", default="", help="the point, ISO 8601 (default: the target of the newest "
                                                       "restore in the operation log)")
    reconcile.add_argument("--apply", action="store_true",
                           help="apply again, through the register's write path, every change the agency holds and "
                                "the register lost (as the municipality's notification, same id)")
    reconcile.add_argument("--register", choices=("identity", "annex", "both"), default="both",
                           help="which register to reconcile (default: both)")
    reconcile.add_argument("--output", default="", help="where the list of persons goes (0600; default "
                                                        ".juki/reconcile/reconcile-<time>.json)")


@dataclasses.dataclass
class Lost:
    """A change the agency holds and the register lost."""

    key: str
    person: str
    """The register's reference of the person (`residents/{id}`), from the agency's copy."""
    version: Any
    receive_time: dt.datetime


@dataclasses.dataclass
class Findings:
    """One register's comparison (and what --apply did)."""

    register: str
    agency_changes: int = 0
    register_versions: int = 0
    lost: list[Lost] = dataclasses.field(default_factory=list)
    unsent: list[holdings.HeldVersion] = dataclasses.field(default_factory=list)
    applied: int = 0
    answered_as_repeat: int = 0
    refused: Counter[str] = dataclasses.field(default_factory=Counter)
    municipalities: Counter[str] = dataclasses.field(default_factory=Counter)
    """Changes found lost per notifying municipality."""

    def counts(self) -> dict[str, Any]:
        return {"agency_changes": self.agency_changes, "register_versions": self.register_versions,
                "lost_changes": len(self.lost), "lost_persons": len({lost.person for lost in self.lost}),
                "unsent_changes": len(self.unsent),
                "unsent_by_outbox_state": dict(Counter(str(v.outbox_state) for v in self.unsent)),
                "lost_under_old_keys": sum(lost.key != outbox_key(self.register, *_notification_of(lost.version))
                                           for lost in self.lost),
                "applied": self.applied, "answered_as_repeat": self.answered_as_repeat,
                "refused": dict(self.refused)}


async def reconcile_command(args: argparse.Namespace) -> int:
    suite = LocalSuite.of(args.home)
    registers = REGISTERS if args.register == "both" else (args.register,)
    since, restored_at = await _point(suite, args.since)
    started = time.monotonic()
    output = Path(args.output) if args.output else suite.home / "reconcile" / (
        f"reconcile-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.json")
    async with logged_action(suite, "reconcile", since=since.isoformat(), registers=list(registers),
                             apply=bool(args.apply)) as outcome:
        found = [await reconcile(suite, register, since, apply=args.apply) for register in registers]
        outcome.detail.update({f.register: f.counts() for f in found})
        outcome.detail["seconds"] = round(time.monotonic() - started, 3)
    _write_list(output, found, since, restored_at)
    _print(found, since, restored_at, output, applied=args.apply, seconds=time.monotonic() - started)
    return 0


async def _point(suite: LocalSuite, option: str) -> tuple[dt.datetime, dt.datetime | None]:
    """The point to compare from, and when the restore was done (None: not known)."""
    from jukitools.cli_backup import parse_time

    restore = await newest_restore(suite)
    if option:
        return parse_time(option), restore[1] if restore else None
    if restore is None or restore[0] is None:
        raise UsageError("--since is required: the operation log records no restore to a point in time "
                         "(a restore to the end of the archived WAL has no target)")
    return restore[0], restore[1]


async def newest_restore(suite: LocalSuite) -> tuple[dt.datetime | None, dt.datetime] | None:
    """(target, time) of the newest restore the operation log records as done (target None: to the end of the
    archived WAL); None when it records none."""
    async with connected(suite.operation_log_url(), "gateway") as connection:
        row = await connection.fetchrow(
            "SELECT time, detail FROM operation_log WHERE method = $1 AND reason = 'done' AND detail <> ''"
            " ORDER BY sequence DESC LIMIT 1", RESTORE)
    if row is None:
        return None
    target = json.loads(row["detail"]).get("target")
    try:
        return dt.datetime.fromisoformat(target), row["time"]
    except (TypeError, ValueError):
        return None, row["time"]


async def reconcile(suite: LocalSuite, register: str, since: dt.datetime, *, apply: bool) -> Findings:
    """Compare `register` with the agency's copy since `since`; with `apply`, re-apply what it lost."""
    from jukitools.cli_bulk import register_api

    findings = Findings(register)
    changes = [change async for change in _agency_changes(suite, register, since)]
    findings.agency_changes = len(changes)
    by_notification = {_notification_of(_version(register, c)): c for c in changes}
    # The register's API as its service builds it (its runtime role: what the service itself may do).
    api = register_api(register, suite.database_url(register), keyring_file=suite.file("JUKI_KEYRING_FILE", KEYRING))
    await api.engine.database.connect()
    try:
        held = await api.holdings.find(list(by_notification))
        position: holdings.Position | None = None
        while True:
            page, position = await api.holdings.since(since, PAGE, position)
            findings.register_versions += len(page)
            findings.unsent.extend(v for v in page if (v.municipality_code, v.notification_id) not in by_notification)
            if position is None:
                break
        for notification, change in by_notification.items():
            if notification not in held:
                version = _version(register, change)
                person = version.name.rsplit("/versions/", 1)[0]
                findings.lost.append(Lost(change.idempotency_key, person, version,
                                          change.receive_time.ToDatetime(dt.UTC)))
                findings.municipalities[notification[0]] += 1
        if apply and findings.lost:
            await _reapply(api, register, findings)
    finally:
        await api.engine.database.close()
    return findings


async def _agency_changes(suite: LocalSuite, register: str, since: dt.datetime,
                          ) -> AsyncIterator[agency_pb2.ReceivedChange]:
    from jukilib.grpc.channels import secure_channel

    target, tls = _agency(suite, register)
    request = agency_pb2.ListReceivedChangesRequest(file=FILES[register], page_size=PAGE)  # type: ignore[arg-type]
    request.received_since.FromDatetime(since.astimezone(dt.UTC))
    async with secure_channel(target, tls) as channel:
        stub = agency_pb2_grpc.AgencyServiceStub(channel)
        while True:
            try:
                page = await stub.ListReceivedChanges(request, timeout=60)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                    raise UsageError(f"the agency lists the {register} file's changes to the {register} register only: "
                                     "use its certificate (JUKI_TLS_CERT, JUKI_TLS_KEY)") from None
                raise Unreachable(f"the agency at {target} did not list its changes ({error.code().name})") from None
            for change in page.received_changes:
                yield change
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token


def _agency(suite: LocalSuite, register: str) -> tuple[str, TlsConfig]:
    """The agency's address and the register's own client certificate (the agency lists a file's changes to its
    register only): JUKI_AGENCY_TARGET and JUKI_TLS_CERT/KEY/CA, else the running suite's."""
    environ = suite.environ
    target = environ.get("JUKI_AGENCY_TARGET", "").strip()
    cert, key, ca = (environ.get(f"JUKI_TLS_{name}", "").strip() for name in ("CERT", "KEY", "CA"))
    if not target or not ca:
        endpoints = suite.endpoints()
        target = target or endpoints.services["agency"]
        ca = ca or str(endpoints.ca_cert)
    pki = suite.home / "pki" / "server"
    tls = TlsConfig(cert=Path(cert) if cert else pki / f"{register}.crt",
                    key=Path(key) if key else pki / f"{register}.key", ca=Path(ca))
    for path in (tls.cert, tls.key, tls.ca):
        if not path.is_file():
            raise UsageError(f"no such file: {path} (the {register} register's certificate: JUKI_TLS_CERT, "
                             "JUKI_TLS_KEY, JUKI_TLS_CA)")
    return target, tls


def _notification_of(version: Any) -> tuple[str, str]:
    return version.change.municipality_code, version.change.notification_id


def _version(register: str, change: agency_pb2.ReceivedChange) -> Any:
    return change.resident_version if register == "identity" else change.annex_resident_version


def municipality_request(register: str, version: Any, previous_code: str = "") -> Any:
    """The notification as the municipality sent it, rebuilt from the version the prefecture stored: what the
    register's receipt digest is computed from (`RegisterApi.notification`), so a resend matches it. The change
    information carries only what a municipality fills in (the prefecture adds municipality and receipt)."""
    stored = version.change
    change = register_pb2.ChangeInfo(kind=stored.kind, reason=stored.reason)
    change.event_date.CopyFrom(stored.event_date)
    change.notify_time.CopyFrom(stored.notify_time)
    request = REQUEST_TYPES[register](notification_id=stored.notification_id, change=change,
                                      previous_resident_code=previous_code)
    request.record.CopyFrom(version.record)
    return request


async def _reapply(api: Any, register: str, findings: Findings) -> None:
    """Apply each lost change again through the register's write path (`RegisterEngine.apply_many`)."""
    codes = await api.holdings.current_codes([_person_id(lost.person) for lost in findings.lost])
    previous = _previous_codes(findings.lost, codes)
    notifications: list[Notification] = []
    for lost in findings.lost:
        try:
            notifications.append(_notification(api, register, lost, previous.get(lost.key, "")))
        except JukiError as error:  # checked as ingest checks it (a rule may have changed since): reported
            findings.refused[error.reason] += 1
    for start in range(0, len(notifications), APPLY_CHUNK):
        chunk = notifications[start:start + APPLY_CHUNK]
        for notification, outcome in zip(chunk, await api.engine.apply_many(chunk), strict=True):
            if isinstance(outcome, JukiError):
                findings.refused[outcome.reason] += 1
            elif outcome.change.receive_time == notification.change.receive_time:
                findings.applied += 1
            else:
                findings.answered_as_repeat += 1  # the municipality resent it meanwhile


def _person_id(person: str) -> uuid.UUID:
    return uuid.UUID(person.rsplit("/", 1)[1])


def _previous_codes(lost: list[Lost], current: dict[uuid.UUID, str]) -> dict[str, str]:
    """The code each lost change of 住民票コード started from: the person's code in the version before it in the
    agency's copy, else the register's current code (the restore kept the person as they were before it)."""
    codes: dict[str, str] = {}
    last: dict[str, str] = {}
    for change in sorted(lost, key=lambda c: (c.person, c.version.version)):
        if change.version.change.reason in RESIDENT_CODE_CHANGES:
            codes[change.key] = last.get(change.person) or current.get(_person_id(change.person), "")
        last[change.person] = change.version.record.resident_code
    return codes


def _notification(api: Any, register: str, lost: Lost, previous_code: str) -> Notification:
    """The municipality's notification, validated as ingest validates it, with the receipt time the register
    first gave it and the person's id (a 記載 re-applied keeps `residents/{id}`)."""
    municipality = lost.version.change.municipality_code
    notification: Notification = api.notification(municipality_request(register, lost.version, previous_code),
                                                  municipality)
    return notification._replace(change=notification.change._replace(receive_time=_receipt(lost)),
                                 person_id=_person_id(lost.person), agency_key=lost.key)


def _receipt(lost: Lost) -> dt.datetime:
    """When the register first received the notification (its version's receipt as the agency holds it)."""
    receive = lost.version.change.receive_time
    return receive.ToDatetime(dt.UTC) if receive.seconds or receive.nanos else lost.receive_time


def _write_list(output: Path, found: list[Findings], since: dt.datetime, restored_at: dt.datetime | None) -> None:
    """The persons concerned, by the register's reference and the notifications (no name, no 住民票コード), 0600."""
    output.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lists: dict[str, Any] = {"since": since.isoformat(),
                             "restored_at": restored_at.isoformat() if restored_at else None}
    for f in found:
        lost: dict[str, list[str]] = defaultdict(list)
        for change in f.lost:
            lost[change.person].append(f"{change.version.change.municipality_code}/"
                                       f"{change.version.change.notification_id}")
        collection = "residents" if f.register == "identity" else "annexResidents"
        unsent: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for version in f.unsent:
            unsent[f"{collection}/{version.person_id}"].append(
                {"version": version.version, "notification": f"{version.municipality_code}/{version.notification_id}",
                 "outbox": version.outbox_state})
        lists[f.register] = {"agency_holds_register_lost": dict(lost), "register_holds_agency_lacks": dict(unsent),
                             "counts": f.counts()}
    write_private_json(output, lists)


def _print(found: list[Findings], since: dt.datetime, restored_at: dt.datetime | None, output: Path, *,
           applied: bool, seconds: float) -> None:
    for f in found:
        counts = f.counts()
        print(f"{f.register}: the agency holds {f.agency_changes} changes received since {since.isoformat()}, the "
              f"register {f.register_versions} versions written since then")
        print(f"  lost with the restore, held by the agency: {counts['lost_changes']} changes of "
              f"{counts['lost_persons']} persons" + (
                  f"; applied again: {f.applied}, already resent by the municipality: {f.answered_as_repeat}, "
                  f"refused: {sum(f.refused.values())} {dict(f.refused) or ''}".rstrip() if applied else
                  " (--apply applies them again)"))
        if counts["lost_under_old_keys"]:
            print(f"  of which {counts['lost_under_old_keys']} the agency holds under a key of (person, version) "
                  "(sent before keys named the notification): applied again, their outbox rows keep that key")
        states = counts["unsent_by_outbox_state"]
        print(f"  held by the register, not by the agency: {counts['unsent_changes']} changes"
              + (f" (outbox: {', '.join(f'{n} {s}' for s, n in sorted(states.items()))})" if states else ""))
    print(f"the persons' references: {output} (readable by you only)")
    end = restored_at.isoformat() if restored_at else "the restore"
    print(f"changes applied after {since.isoformat()} and never forwarded to the agency are lost to both: every "
          f"municipality must send again, with the same ids, the notifications it had acknowledged from "
          f"{since.isoformat()} to {end} (a repeat is answered, never applied twice):")
    seen: Counter[str] = Counter()
    for f in found:
        seen.update(f.municipalities)
    for municipality in gunma_municipalities().all():
        known = f" ({seen[municipality.code6]} of its changes found at the agency)" if seen[municipality.code6] else ""
        print(f"  {municipality.code6} {municipality.name}: {since.isoformat()} → {end}{known}")
    print(f"reconciled in {seconds:.1f} s")

