#!/bin/bash
# Like the official image's entrypoint: `bash`, `python` or any executable runs as given; anything else is
# an Airflow command (`api-server`, `scheduler`, `celery worker`, ...). With _AIRFLOW_DB_MIGRATE=true the
# metadata database is migrated first (for a one-shot init service).
set -euo pipefail
if [ "${_AIRFLOW_DB_MIGRATE:-false}" = true ]; then airflow db migrate; fi
if [ "$#" -eq 0 ]; then set -- --help; fi
if [ "$1" = airflow ]; then shift; fi
case "$1" in
    -*|api-server|scheduler|dag-processor|triggerer|celery|db|dags|tasks|users|config|connections|variables|\
    pools|providers|info|version|standalone|cheat-sheet|jobs|kerberos|plugins|assets|backfill|rotate-fernet-key)
        exec airflow "$@" ;;
esac
if command -v "$1" >/dev/null 2>&1; then exec "$@"; fi
exec airflow "$@"
