"""juki's services: one package each, talking to each other only through `juki.*.v1` contracts.

Imported and installed as `juki_services` (setup.py's package_dir), not as a generic top-level `services`;
`libs/juki_services` links here, so that a checkout (PYTHONPATH=libs), mypy and ruff see that name too.
"""

# jukilib turns gRPC's fork support off before anything imports grpc (a service's modules import grpc first).
import jukilib as _jukilib  # noqa: F401
