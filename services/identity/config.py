"""The identity service's configuration: a register's settings (its keyring seals the 個人番号 at rest)."""

from __future__ import annotations

from collections.abc import Mapping

from jukilib.config import Env
from jukilib.register.config import RegisterConfig, load_register

IdentityConfig = RegisterConfig


def load(environ: Mapping[str, str] | None = None) -> IdentityConfig:
    """Read from the environment (os.environ by default); raises ConfigError naming the variable."""
    return load_register("identity", Env(environ), IdentityConfig)
