#!/usr/bin/env bash
# The compose standby: on an empty data directory, a base backup of the primary through its slot
# (pg_basebackup -R -X stream: standby.signal and primary_conninfo written), then the server as a hot standby.
# It never waits for a synchronous standby of its own once promoted (`docker compose exec -u postgres
# postgres-standby pg_ctl promote`): synchronous_standby_names is cleared on its command line.
set -euo pipefail
export PGPASSWORD="${JUKI_REPLICATION_PASSWORD}"
if [ ! -s "${PGDATA}/PG_VERSION" ]; then
  until pg_isready -h postgres -p 5432 -q; do sleep 1; done
  pg_basebackup -d "host=postgres port=5432 user=juki_replication application_name=juki_standby" \
    -D "${PGDATA}" -R -X stream -S juki_standby -c fast
  chmod 0700 "${PGDATA}"
fi
unset PGPASSWORD
exec postgres -c hot_standby=on -c synchronous_standby_names=''
