"""The annex service's configuration: a register's settings and nothing else (its keyring seals only the
refused notifications of its review queue: the annex file holds no identifier of the 番号法, 住基法 30-41)."""

from __future__ import annotations

from collections.abc import Mapping

from jukilib.config import Env
from jukilib.register.config import RegisterConfig, load_register

AnnexConfig = RegisterConfig


def load(environ: Mapping[str, str] | None = None) -> AnnexConfig:
    """Read from the environment (os.environ by default); raises ConfigError naming the variable."""
    return load_register("annex", Env(environ), AnnexConfig)
