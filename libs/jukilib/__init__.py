"""jukilib: the hand-written code shared by every juki service.

Configuration, errors, gRPC bootstrap, database access, telemetry and the register engine live here;
the generated contracts live in the separate `juki` package.
"""

import os as _os

# juki's processes fork only to exec another program (pg_ctl and initdb as the database's user, `juki serve`
# children that die with `juki up`) or to prepare an initial load's rows in worker processes
# (`jukilib.register.load`), never to use gRPC in the child. gRPC's fork support runs its own handlers in
# such a child, which crash it ("Check failed: next_worker->state == KICKED", "...->initialized_cv") while
# other threads use gRPC. Off, before anything imports grpc (an explicit setting wins): every package of
# juki's (`juki_services`, `jukitools`, the tests) imports jukilib before its modules import grpc.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
