"""The disclosure service's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from juki_services.disclosure.notices import DEFAULT_OFFICE, Office
from jukilib.config import DEFAULT_CALL_TIMEOUT, CommonConfig, Env, call_timeout, load_common


@dataclass(frozen=True)
class DisclosureConfig:
    """Everything the disclosure service reads."""

    common: CommonConfig
    gateway_target: str
    """host:port of the gateway, through which records are read and 12-5 reports made (JUKI_GATEWAY_TARGET)."""
    keyring_file: Path
    """Keys sealing the written notices at rest (JUKI_KEYRING_FILE, required; see jukilib.keyring): their PDF
    and JSON hold the resident's record, 個人番号 included."""
    target_days: int = 14
    """The prefecture's own target for answering a disclosure request, in days (JUKI_DISCLOSURE_TARGET_DAYS),
    tracked beside the statutory 30 days (30-33)."""
    receipt_max_age_days: int = 365
    """How old a disclosure or correction request's stated receipt time may be
    (JUKI_DISCLOSURE_RECEIPT_MAX_AGE_DAYS): a case is entered when it arrives, well within its 30 days."""
    poll_interval: float = 30.0
    """Seconds between the checks of its 12-5 reports (JUKI_DISCLOSURE_POLL_SECONDS)."""
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    """Seconds a call to the gateway may take when the call being served has no deadline, and for the
    report follower's calls (JUKI_CALL_TIMEOUT_SECONDS)."""
    office: Office = DEFAULT_OFFICE
    """Who issues the written notices and answers for them: the issuer line (JUKI_NOTICE_ISSUER), the local
    public entity (JUKI_NOTICE_PREFECTURE), the responsible section (JUKI_NOTICE_SECTION), its address
    (JUKI_NOTICE_ADDRESS) and telephone (JUKI_NOTICE_TELEPHONE), and the document number's prefix
    (JUKI_NOTICE_NUMBER_PREFIX). Defaults: the seed's 請求先 for 開示・訂正・利用停止 and 群馬県知事."""


def load(environ: Mapping[str, str] | None = None) -> DisclosureConfig:
    """Read from the environment (os.environ by default); raises ConfigError naming the variable."""
    env = Env(environ)
    return DisclosureConfig(
        common=load_common("disclosure", env),
        gateway_target=env.text("JUKI_GATEWAY_TARGET"),
        keyring_file=env.existing_file("JUKI_KEYRING_FILE"),
        target_days=env.integer("JUKI_DISCLOSURE_TARGET_DAYS", 14, minimum=1),
        receipt_max_age_days=env.integer("JUKI_DISCLOSURE_RECEIPT_MAX_AGE_DAYS", 365, minimum=1),
        poll_interval=env.seconds("JUKI_DISCLOSURE_POLL_SECONDS", 30.0),
        call_timeout=call_timeout(env),
        office=load_office(env),
    )


def load_office(env: Env) -> Office:
    """The notices' issuer and section, each overridable by its variable."""
    default = DEFAULT_OFFICE
    return Office(issuer=env.text("JUKI_NOTICE_ISSUER", default.issuer),
                  prefecture=env.text("JUKI_NOTICE_PREFECTURE", default.prefecture),
                  section=env.text("JUKI_NOTICE_SECTION", default.section),
                  address=env.text("JUKI_NOTICE_ADDRESS", default.address),
                  telephone=env.text("JUKI_NOTICE_TELEPHONE", default.telephone),
                  number_prefix=env.text("JUKI_NOTICE_NUMBER_PREFIX", default.number_prefix))
