"""The agency stand-in's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from jukilib.config import DEFAULT_CALL_TIMEOUT, CommonConfig, Env, call_timeout, load_common


@dataclass(frozen=True)
class AgencyConfig:
    """Everything the agency stand-in reads."""

    common: CommonConfig
    gateway_target: str | None = None
    """host:port of the prefecture's gateway, through which the stand-in sends its 30-8 error reports
    (JUKI_GATEWAY_TARGET; without it, it sends none)."""
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    """Seconds a call to the gateway may take when the call being served has no deadline
    (JUKI_CALL_TIMEOUT_SECONDS)."""


def load(environ: Mapping[str, str] | None = None) -> AgencyConfig:
    """Read from the environment (os.environ by default); raises ConfigError naming the variable."""
    env = Env(environ)
    return AgencyConfig(common=load_common("agency", env), gateway_target=env.optional("JUKI_GATEWAY_TARGET"),
                        call_timeout=call_timeout(env))
