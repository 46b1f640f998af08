"""`juki failover` and `juki rejoin`: the standby of `juki up --standby` promoted, the old primary rewound.

Both are maintenance actions in the operation log (`jukitools.maintenance_log.logged_action`). A failover
cannot write its intent first: the log lives in the database whose primary failed, and nothing takes a write
until the standby is promoted. It is recorded on the new primary as soon as that accepts writes, as a
restore is once the restored database runs (`jukitools.cli_backup`), naming which data directory was
promoted, whether the old primary was still running (then stopped first: a switchover) and how long the
promotion took. A rejoin is logged before and after, on the primary it rejoins.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from jukilib.config import UsageError
from jukitools import standby
from jukitools.local import LocalSuite
from jukitools.maintenance_log import logged_action


def add_parsers(commands: Any) -> None:
    commands.add_parser(
        "failover", help="promote the standby of `juki up --standby` (pg_ctl promote; the old primary is stopped "
                         "first if it still runs); services reconnect by themselves")
    commands.add_parser(
        "rejoin", help="make the old primary of the last failover the new standby (pg_rewind), streaming from the "
                       "new primary (synchronous again if the suite is)")


async def failover_command(args: argparse.Namespace) -> int:
    suite = LocalSuite.of(args.home)
    try:
        promoted = await asyncio.to_thread(standby.promote, suite.home)
    except RuntimeError as error:  # a PostgreSQL tool failed: its message names files and positions, no data
        print(f"juki: failover not done: {error}", file=sys.stderr)
        return 1
    print(f"promoted {promoted.promoted} in {promoted.seconds:.1f} s (timeline {promoted.timeline}); "
          + ("the old primary was running and was stopped first" if promoted.fenced
             else f"the old primary ({promoted.old_primary}) was not running"), flush=True)
    async with logged_action(suite, "failover", promoted=promoted.promoted, old_primary=promoted.old_primary,
                             old_primary_running=promoted.fenced, promotion_seconds=promoted.seconds,
                             timeline=promoted.timeline):
        pass
    print(f"the suite's primary is now {promoted.promoted}; `juki rejoin` makes {promoted.old_primary} its standby")
    return 0


async def rejoin_command(args: argparse.Namespace) -> int:
    suite = LocalSuite.of(args.home)
    state = standby.Replication.load(suite.home)
    if state is None:
        raise UsageError(f"no standby in {suite.home}: start the suite with `juki up --standby`")
    try:
        async with logged_action(suite, "rejoin", old_primary=state.standby, primary=state.primary,
                                 synchronous=state.synchronous) as outcome:
            rejoined, how = await asyncio.to_thread(standby.rejoin, suite.home, _replication_password(suite))
            outcome.detail.update(streaming=True, how=how)
    except RuntimeError as error:  # logged as failed; the directory is left as it was
        print(f"juki: rejoin not done: {error}\nmove {suite.home / state.standby} aside and run "
              "`juki up --standby` again: it makes a new standby from a base backup", file=sys.stderr)
        return 1
    mode = "synchronous" if state.synchronous else "asynchronous"
    print(f"{rejoined.name} is the standby of {state.primary} again ({mode}, streaming): {how}")
    return 0


def _replication_password(suite: LocalSuite) -> str:
    path = suite.home / "db-credentials.json"
    if not path.is_file():
        raise UsageError(f"no {path}: `juki up --standby` creates it")
    password: str = json.loads(path.read_text(encoding="utf-8"))[standby.REPLICATION_ROLE]
    return password
