"""Where a `juki` command finds its settings: the one place that knows the local suite's layout.

The home is `juki --home DIR`, else JUKI_HOME, else `.juki/` of the current directory, made absolute.
`juki up` keeps there:

    endpoints.json      gateway and service addresses (localhost), CA and sample client certificates,
                        absolute paths, no secret; written last, once the demo data is loaded; removed on stop
    databases.json      every service's runtime-role URL (`url`) and schema-owner URL (`migration_url`), 0600;
                        written just before endpoints.json, removed on stop
    db-credentials.json the roles' passwords, kept across runs (what `juki up` bootstraps the roles with)
    keyring.json, operation-log.key/.pub, operator-auth.key/.pub, credentials/ID.credential, pki/
    checkpoints/        the journal of the operation log's signed checkpoints (outside the database)
    operation-log-keys.json  the operation log's public keys with validity periods (after a key rotation)

Database URLs come from `databases.json`, not from `db-credentials.json`: a URL needs the server's host,
port and database as well, which only the running `juki up` knows (an embedded server on a fresh port
each run, or the server of JUKI_DATABASE_URL), so deriving them would take a second file anyway. The
URLs written are the ones `prepare_database` returned and the services run with, so a command connects
exactly as the service does; and the file is there only while a suite runs, as endpoints.json is.

Every setting: an explicit environment variable wins (a deployment, a test, a second suite), else the
home's file; with neither, a UsageError that names both (one line, exit 2). Roles: a command connects
as the service whose data it touches, with the runtime role when the service's own grants suffice
(audit, operators login, outbox) and the schema owner's when they do not (keys rotate, migrate, load, the
first administrator); never as the superuser, whose URL no file keeps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jukilib.config import UsageError
from jukitools.client import Endpoints

ENDPOINTS = "endpoints.json"
DATABASES = "databases.json"
KEYRING = "keyring.json"
OPERATION_LOG_PUBLIC_KEY = "operation-log.pub"
OPERATION_LOG_KEYRING = "operation-log-keys.json"
"""The operation log's public keys with their validity periods, once `juki audit rotate-key` has run."""
CHECKPOINT_DIR = "checkpoints"
"""The journal of signed checkpoints kept outside the database (development: beside the suite's files)."""
OPERATOR_AUTH_KEY = "operator-auth.key"
HEALTH_CALLER = "admin-office"
"""The client certificate `juki health` presents by default: the administrators' terminal."""


def home_of(option: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The suite's directory, absolute: `option` (--home), else JUKI_HOME, else ./.juki."""
    environ = os.environ if environ is None else environ
    raw = option or environ.get("JUKI_HOME", "").strip() or ".juki"
    return Path(raw).expanduser().resolve()


def write_private_json(path: Path, data: Any) -> Path:
    """Write `data` to `path` (0600) atomically: readers see the old file or the whole new one."""
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    temporary.touch(mode=0o600)
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)
    return path


def write_private_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` (0600) atomically: a reader sees the old file or the whole new one."""
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    temporary.touch(mode=0o600)
    temporary.write_bytes(data)
    temporary.replace(path)
    return path


@dataclass(frozen=True)
class LocalSuite:
    """The settings of one command: its environment first, then the suite in `home`."""

    home: Path
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @classmethod
    def of(cls, option: str | None = None) -> LocalSuite:
        return cls(home_of(option))

    def no_suite(self) -> str:
        return f"no running suite in {self.home} (start one with `make run`, or name its directory with --home)"

    def endpoints(self) -> Endpoints:
        """The running suite's endpoints.json."""
        path = self.home / ENDPOINTS
        if not path.is_file():
            raise UsageError(self.no_suite())
        return Endpoints.load(path)

    def running_home(self) -> Path:
        """The home, once it is known to hold a running suite (for commands that read endpoints.json)."""
        self.endpoints()
        return self.home

    def database_url(self, service: str) -> str:
        """`service`'s runtime role: JUKI_DATABASE_URL, else the running suite's."""
        return self._url("JUKI_DATABASE_URL", service, "url")

    def owner_url(self, service: str) -> str:
        """`service`'s schema owner: JUKI_MIGRATION_DATABASE_URL, else the running suite's."""
        return self._url("JUKI_MIGRATION_DATABASE_URL", service, "migration_url")

    def has_explicit(self, variable: str) -> bool:
        return bool(self.environ.get(variable, "").strip())

    def _url(self, variable: str, service: str, key: str) -> str:
        explicit = self.environ.get(variable, "").strip()
        if explicit:
            return explicit
        path = self.home / DATABASES
        if not path.is_file():
            raise UsageError(f"{self.no_suite()} and {variable} is not set")
        url: str = json.loads(path.read_text(encoding="utf-8"))[service][key]
        return url

    def file(self, variable: str, name: str, option: str = "") -> Path:
        """A key or keyring file: `option`, else `variable`, else the home's `name`; it must exist."""
        explicit = option or self.environ.get(variable, "").strip()
        if explicit:
            path = Path(explicit).expanduser()
            if not path.is_file():
                raise UsageError(f"no such file: {path} (from {'the option' if option else variable})")
            return path
        path = self.home / name
        if not path.is_file():
            raise UsageError(f"{variable} is not set and there is no {path} (`juki up` or `juki dev-certs` "
                             "creates it)")
        return path
