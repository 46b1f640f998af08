"""A small typed client for calling juki through the gateway (used by `juki call`, the demo loader
and the tests): an mTLS channel as a given caller, the metadata that declares a purpose, and the
operator credential that human work carries (issued by `juki operators login`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jukilib import caller
from jukilib.config import TlsConfig, UsageError
from jukilib.grpc.channels import secure_channel
from jukilib.operator_credential import CREDENTIAL_KEY


@dataclass(frozen=True)
class Endpoints:
    """`.juki/endpoints.json`, written by `juki up` last, once every service is SERVING and the demo data
    is loaded: addresses and certificate paths only (absolute), no secret. Database URLs are elsewhere
    (`jukitools.local`)."""

    gateway: str
    services: dict[str, str]
    ca_cert: Path
    client_certs: dict[str, dict[str, str]]
    metrics: dict[str, str] = field(default_factory=dict)
    """Each service's Prometheus endpoint (`host:port`, path `/metrics`), from `juki up`."""

    @classmethod
    def load(cls, path: Path) -> Endpoints:
        """Read `path`; keys it does not know (the database URLs older files carried) are ignored."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(gateway=data["gateway"], services=data["services"], ca_cert=Path(data["ca_cert"]),
                   client_certs=data["client_certs"], metrics=data.get("metrics", {}))

    def to_json(self) -> str:
        return json.dumps({"gateway": self.gateway, "services": self.services, "ca_cert": str(self.ca_cert),
                           "client_certs": self.client_certs, "metrics": self.metrics}, indent=2, ensure_ascii=False)

    def tls_for(self, caller_name: str) -> TlsConfig:
        """`caller_name`'s client certificate; UsageError naming the known callers when there is none."""
        if caller_name not in self.client_certs:
            raise UsageError(f"unknown caller {caller_name!r} (--as); known: {known_callers(self.client_certs)}")
        pair = self.client_certs[caller_name]
        return TlsConfig(cert=Path(pair["cert"]), key=Path(pair["key"]), ca=self.ca_cert)


def known_callers(names: Iterable[str]) -> str:
    """The sample callers by name, the municipalities' CSs (`cs-<code>`, one per municipality) as a count."""
    names = sorted(names)
    named = [name for name in names if not name.startswith("cs-")]
    systems = len(names) - len(named)
    return ", ".join(named) + (f" and cs-<municipality code> ({systems} CSs)" if systems else "")


class MissingCredential(UsageError, FileNotFoundError):
    """No saved credential for an operator (a FileNotFoundError too, as it always was)."""


def gateway_channel(endpoints: Endpoints, caller_name: str) -> aio.Channel:
    """A channel to the gateway presenting `caller_name`'s client certificate."""
    return secure_channel(endpoints.gateway, endpoints.tls_for(caller_name))


def purpose_metadata(purpose: str, *, case_reference: str = "", credential: str = "",
                     request_id: str = "") -> tuple[tuple[str, str], ...]:
    """Metadata declaring the purpose of use of a call (and optionally case, operator credential, request
    id). Human work needs `credential`; the gateway takes the operator only from it."""
    pairs = ((caller.PURPOSE_KEY, purpose), (caller.CASE_REFERENCE_KEY, case_reference),
             (CREDENTIAL_KEY, credential), (caller.REQUEST_ID_KEY, request_id))
    return tuple((k, v) for k, v in pairs if v)


def credential_path(home: Path, operator_id: str) -> Path:
    """Where `juki operators login` keeps an operator's current credential."""
    return home / "credentials" / f"{operator_id}.credential"


def save_credential(home: Path, operator_id: str, credential: str) -> Path:
    path = credential_path(home, operator_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(credential + "\n", encoding="ascii")
    return path


def load_credential(home: Path, operator_id: str) -> str:
    """The credential saved by `juki operators login OPERATOR_ID`; MissingCredential names what to run."""
    path = credential_path(home, operator_id)
    if not path.exists():
        raise MissingCredential(f"no credential for operator {operator_id} in {path.parent}: "
                                f"run `juki operators login {operator_id}`")
    return path.read_text(encoding="ascii").strip()


async def health_status(target: str, tls: TlsConfig, service: str = "", timeout: float = 3.0) -> str:
    """The health status name of `service` at `target` ('UNREACHABLE' when it cannot be asked)."""
    async with secure_channel(target, tls) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
