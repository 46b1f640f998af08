#!/usr/bin/env bash
# Run once by the postgres image on a new data directory (docker-entrypoint-initdb.d): the role the standby
# streams as (REPLICATION and LOGIN only), its physical slot (the primary keeps every segment the standby has
# not received), and the one pg_hba line that lets it connect for replication, with its password.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -v password="${JUKI_REPLICATION_PASSWORD}" --username "${POSTGRES_USER}" \
     --dbname "${POSTGRES_DB}" <<'SQL'
CREATE ROLE juki_replication WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot('juki_standby');
SQL
echo "host replication juki_replication all scram-sha-256" >> "${PGDATA}/pg_hba.conf"
