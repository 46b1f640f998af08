"""The annex service's configuration: a register's settings and nothing else. The annex file holds no
number that needs sealing at rest (住基法 30-41), so the annex service has no keyring to read."""

from __future__ import annotations

from collections.abc import Mapping

from jukilib.config import Env
from jukilib.register.config import RegisterConfig, load_register

AnnexConfig = RegisterConfig


def load(environ: Mapping[str, str] | None = None) -> AnnexConfig:
    """Read from the environment (os.environ by default); raises ConfigError naming the variable."""
    return load_register("annex", Env(environ), AnnexConfig)
