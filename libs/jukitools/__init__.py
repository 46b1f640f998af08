"""jukitools: what drives juki from outside its services.

The `juki` command (`cli*`), the local suite (`juki up`: `suite`, `suite_supervisor`, `local`), the
benchmarks (`bench_*`, `benchkit`), the demo data (`demo`) and the helpers that call the gateway
(`client`, `calls`). It may import the services; `jukilib`, the library the services share, never does.
"""

# jukilib turns gRPC's fork support off before anything imports grpc: first, as this package's modules
# import grpc themselves
import jukilib as _jukilib  # noqa: F401
