#!/usr/bin/env bash
# The local two-server demo, from a fresh clone on a fresh Debian 12/13 machine, as root:
#
#   scripts/demo.sh         set up this machine, build the images, start server-1 and server-2 (systemd containers
#                           with nested Podman), provision both with ansible/site.yml from inventory/local, start
#                           the renewer of the placement document's lease (demo/renewer.sh, in the background), and
#                           print the Airflow UIs, where the admin passwords are, and the placement table
#   scripts/demo.sh --watchdog
#                           the same servers, publishing by serve with the watchdog (inventory/local-watchdog): a
#                           third systemd container, publisher, runs the confirming source (airflow-placement serve,
#                           installed by site.yml's dag_placement role); ansible/watchdog.yml writes the watchdog's
#                           configuration (.cache/demo/watchdog/); instead of the renewer, demo/watchdog.sh runs
#                           airflow-placement watch on this machine in the background (.cache/demo/watchdog.log)
#   scripts/demo-down.sh    stop the renewer (or the watchdog) and remove everything the demo created
#
# Both demos use the same container names and network: one at a time (demo-down.sh between them).
#
# Safe to run again: running servers are reused, and a second run changes nothing on them. Steps print their time;
# Ansible's output of each step goes to .cache/demo/<step>.log (DEMO_VERBOSE=1 shows it as it runs).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

watchdog=0
case "${1:-}" in
    "") ;;
    --watchdog) watchdog=1 ;;
    *) echo "demo: unknown argument '$1' (usage: scripts/demo.sh [--watchdog])" >&2; exit 2 ;;
esac
inventory=$repo/inventory/local
[ "$watchdog" = 0 ] || inventory=$repo/inventory/local-watchdog
logs=$repo/.cache/demo
images=(debian-systemd:12 airflow:3.3.2 postgres:15 busybox:latest)
timings=()

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run as root (it installs Debian packages and runs privileged containers)" >&2
    exit 1
fi

step() {  # step TITLE COMMAND...: runs COMMAND under a header and records its time
    local title=$1; shift
    local start=$SECONDS
    printf '\n==> %s\n' "$title"
    if ! "$@"; then
        printf '\ndemo: step "%s" failed after %ss\n' "$title" $((SECONDS - start)) >&2
        exit 1
    fi
    timings+=("$(printf '  %-42s %5ss' "$title" $((SECONDS - start)))")
    printf '    (%ss)\n' $((SECONDS - start))
}

playbook() {  # playbook LOG PLAYBOOK ARGS...: ansible-playbook against the inventory, log kept, recap shown
    local log=$logs/$1; shift
    mkdir -p "$logs"
    local status=0
    if [ "${DEMO_VERBOSE:-0}" = 1 ]; then
        ansible-playbook -i "$inventory" "$@" 2>&1 | tee "$log" || status=$?
    else
        # One line per task, so that progress shows without the full output.
        ansible-playbook -i "$inventory" "$@" >"$log" 2>&1 &
        local pid=$!
        tail -n +1 -F --pid="$pid" "$log" 2>/dev/null | grep --line-buffered -E '^(PLAY|TASK) \[' \
            | sed -u -E -e 's/^(PLAY|TASK) \[(.*)\] \**$/    \2/' -e 's|/[^ ]*/roles/||' || true
        wait "$pid" || status=$?
    fi
    sed -n '/^PLAY RECAP/,$p' "$log" | sed 's/^/    /'
    if [ "$status" -ne 0 ]; then
        echo "    failed; the whole output is in $log" >&2
        grep -E -A4 '^(fatal|failed):' "$log" | head -n 40 | sed 's/^/    /' >&2 || true
    fi
    return "$status"
}

export PATH=$repo/.venv/bin:$PATH
export ANSIBLE_ROLES_PATH=$repo/ansible/roles
export ANSIBLE_FORCE_COLOR=0
# The server containers' host keys are not a concern; nothing here uses SSH.
export ANSIBLE_HOST_KEY_CHECKING=False

inventory_var() {  # inventory_var HOST NAME: a variable of the inventory, as the playbooks see it
    ansible-inventory -i "$inventory" --host "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

detach() {  # detach COMMAND...: COMMAND in the background in its own session, without this shell's open files (a
    # lock demo.sh runs under, e.g. flock FILE scripts/demo.sh, must not stay held by the renewer or the watchdog)
    (
        for fd in $(ls /proc/$BASHPID/fd); do
            [ "$fd" -gt 2 ] && eval "exec $fd>&-"
        done
        exec setsid "$@" </dev/null >/dev/null 2>&1
    ) &
}

renewer_pid() {  # the pid of the running demo/renewer.sh (its own process group), or nothing
    local pid
    pid=$(cat "$logs/renewer.pid" 2>/dev/null) || return 1
    ps -o args= -p "$pid" 2>/dev/null | grep -q 'demo/renewer.sh' && echo "$pid"
}

start_renewer() {  # file publishing needs renewals: demo/renewer.sh in the background; scripts/demo-down.sh stops it
    local pid interval
    if pid=$(renewer_pid); then
        echo "    already running (pid $pid), log $logs/renewer.log"
        return 0
    fi
    interval=$(inventory_var server-1 demo_renew_interval_seconds)
    mkdir -p "$logs"
    detach demo/renewer.sh "$interval"
    echo "$!" >"$logs/renewer.pid"
    echo "    ansible/renew.yml every ${interval}s after the last one (pid $!), log $logs/renewer.log"
}

watchdog_pid() {  # the pid of the running demo/watchdog.sh (its own process group), or nothing
    local pid
    pid=$(cat "$logs/watchdog.pid" 2>/dev/null) || return 1
    ps -o args= -p "$pid" 2>/dev/null | grep -q 'demo/watchdog.sh' && echo "$pid"
}

start_watchdog() {  # serve publishing: airflow-placement watch in the background; scripts/demo-down.sh stops it
    local pid
    if pid=$(watchdog_pid); then
        echo "    already running (pid $pid), log $logs/watchdog.log"
        return 0
    fi
    mkdir -p "$logs"
    detach demo/watchdog.sh "$logs/watchdog/watch.yaml"
    echo "$!" >"$logs/watchdog.pid"
    echo "    airflow-placement watch --config $logs/watchdog/watch.yaml (pid $!), log $logs/watchdog.log"
}

other_demo() {  # refuses to start over the other demo's containers (same names): demo-down.sh first
    local publisher=0
    podman container exists publisher && publisher=1
    if podman container exists server-1 && [ "$publisher" != "$watchdog" ]; then
        echo "demo: the $([ "$publisher" = 1 ] && echo 'watchdog (--watchdog)' || echo 'file-publishing') demo is up" \
            "(same container names); take it down first: scripts/demo-down.sh" >&2
        exit 1
    fi
}
other_demo

assemble_dags() {  # the demo's DAG folder: the examples (dags/) and the drill's fixtures (tests/drill/dags/)
    local folder=$repo/.cache/demo/dags
    rm -rf "$folder.new" && mkdir -p "$folder.new"
    cp -p dags/*.py tests/drill/dags/*.py "$folder.new/"
    rm -rf "$folder" && mv "$folder.new" "$folder"
    echo "    $folder: $(ls "$folder" | tr '\n' ' ')"
}

step "Set up this machine: scripts/bootstrap.sh" scripts/bootstrap.sh
step "Assemble the demo's DAG folder (inventory/local/group_vars/all/drill.yml)" assemble_dags
step "Build the images: images/build.sh" images/build.sh "${images[@]}"
step "Start the servers: demo/servers.yml" playbook servers.log demo/servers.yml
step "Provision the servers: ansible/site.yml" playbook site.log ansible/site.yml
if [ "$watchdog" = 0 ]; then
    step "Renew the placement document's lease: demo/renewer.sh" start_renewer
else
    step "Write the watchdog's configuration: ansible/watchdog.yml" playbook watchdog-config.log ansible/watchdog.yml
    step "Start the watchdog: demo/watchdog.sh" start_watchdog
fi

health() {  # health PORT HOST: the components' status from Airflow's health endpoint (waits up to 60 s for an answer)
    local answer="" _
    for _ in $(seq 12); do
        # HTTPS with the certificate the server made once (airflow_compose copies it next to the admin password).
        answer=$(curl -fsS --max-time 5 --cacert "$inventory/.secrets/airflow_compose/$2/tls.crt" \
            "https://127.0.0.1:$1/api/v2/monitor/health" 2>/dev/null) && break
        sleep 5
    done
    python3 -c 'import json,sys; print(", ".join(k + " " + v["status"] for k, v in json.load(sys.stdin).items()))' \
        <<<"$answer" 2>/dev/null || echo "not answering"
}

summary() {
    local host port status password unreachable=0
    printf '\nAirflow UIs (HTTPS, self-signed: trust tls.crt next to the password; user admin, the password is in the file named):\n'
    for host in $(ansible-inventory -i "$inventory" --graph airflow_servers | sed -n 's/^ *|--//p'); do
        port=$(inventory_var "$host" demo_server_ui_port)
        status=$(health "$port" "$host")
        [ "$status" != "not answering" ] || unreachable=1
        password=$inventory/.secrets/airflow_compose/$host/admin_password
        # The watchdog demo gives both servers one admin password (the watchdog's re-runs sign in with it).
        [ -e "$password" ] || password=$inventory/.secrets/airflow_compose/admin_password
        printf '  %-9s https://127.0.0.1:%s/  %s\n' "$host" "$port" "$password"
        printf '  %-9s %s\n' "" "$status"
    done
    printf '\nWork database shared by the servers'"'"' task containers (%s on the demo network):\n' "$(inventory_var server-1 demo_work_db_ip):5432"
    printf '  psql -h 127.0.0.1 -p %s -U %s %s    password: %s\n' "$(inventory_var server-1 demo_work_db_port)" \
        "$(inventory_var server-1 demo_work_db_user)" "$(inventory_var server-1 demo_work_db_name)" "$inventory/.secrets/work_db/password"
    if [ "$watchdog" = 0 ]; then
        printf '\nPlacement (inventory/local/.rendered/airflow-dag-on-server.yaml, published to every server, renewed by demo/renewer.sh):\n'
    else
        printf '\nPlacement (inventory/local-watchdog/.rendered/airflow-dag-on-server.yaml, served by airflow-placement serve on publisher, %s:8765):\n' \
            "$(inventory_var publisher demo_server_ip)"
    fi
    airflow-placement show "$inventory/.rendered/airflow-dag-on-server.yaml" | sed 's/^/  /'
    if [ "$watchdog" = 1 ]; then
        printf '\nThe watchdog moves a failed server'"'"'s DAGs by itself; its actions: %s\n' "$logs/watchdog.log"
    fi
    printf '\nMove server-1'"'"'s DAGs to server-2: .venv/bin/ansible-playbook -i %s ansible/failover.yml -e failed=server-1\n' \
        "${inventory#"$repo"/}"
    printf 'Remove it all: scripts/demo-down.sh\n'
    return "$unreachable"
}
step "Summary" summary

printf '\nTimings:\n'
printf '%s\n' "${timings[@]}"
printf '  %-42s %5ss\n' total "$SECONDS"
