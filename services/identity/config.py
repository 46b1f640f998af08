"""The identity service's configuration: a register's settings, and the keyring for 個人番号 at rest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jukilib.config import Env
from jukilib.register.config import RegisterConfig, load_register


@dataclass(frozen=True, kw_only=True)
class IdentityConfig(RegisterConfig):
    """Everything the identity service reads."""

    keyring_file: Path
    """Keys for 個人番号 at rest (JUKI_KEYRING_FILE, required; see jukilib.keyring)."""


def load(environ: Mapping[str, str] | None = None) -> IdentityConfig:
    """Read from the environment (os.environ by default); raises ConfigError naming the variable."""
    env = Env(environ)
    return load_register("identity", env, IdentityConfig, keyring_file=env.existing_file("JUKI_KEYRING_FILE"))
