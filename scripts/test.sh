#!/usr/bin/env bash
# Runs every test of airflow-placement: lint, type checks, the Python tests (unit, real HTTP server, real
# `airflow dags test` against the Podman socket) and every Molecule scenario. Sets the machine up first, so it
# works from a fresh clone on a fresh Debian machine. Prints a timing summary per stage at the end.
#
#   scripts/test.sh            every stage but the drill (what CI runs)
#   scripts/test.sh lint unit  only the named stages (setup, lint, unit, integration, ansible, molecule)
#   scripts/test.sh drill      the failover drill, opt-in (about 25 min): brings the local demo up, runs tests/drill,
#                              takes the demo down again
#   scripts/test.sh drill-watchdog
#                              the watchdog drill, opt-in (about 35 min): brings the watchdog demo up
#                              (scripts/demo.sh --watchdog), runs tests/drill/test_watchdog_drill.py, takes it down
#   scripts/test.sh example    the example inventory on three servers, opt-in (about 10 min): brings its test bed up,
#                              runs tests/example, takes the bed down again (tests/example/down.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

stages=("$@")
[ "${#stages[@]}" -gt 0 ] || stages=(setup lint unit integration ansible molecule)
summary=()
failed=0

run_stage() {
    local name=$1; shift
    local start=$SECONDS status=ok
    printf '\n======== %s ========\n' "$name"
    "$@" || { status=FAILED; failed=1; }
    summary+=("$(printf '%-12s %-7s %5ss' "$name" "$status" $((SECONDS - start)))")
}

stage_setup() { scripts/bootstrap.sh; }
stage_lint() {
    .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy || return 1
    if [ -d ansible ]; then
        .venv/bin/yamllint --strict . && (cd ansible && PATH="$PWD/../.venv/bin:$PATH" ansible-lint --profile production)
    fi
}
stage_unit() { .venv/bin/pytest -q tests/unit; }
stage_integration() { .venv/bin/pytest -q tests/integration; }
stage_ansible() { .venv/bin/pytest -q tests/ansible; }
stage_drill() {
    local status=0
    scripts/demo.sh && .venv/bin/pytest -q -s tests/drill --ignore tests/drill/test_watchdog_drill.py || status=1
    scripts/demo-down.sh || status=1
    return "$status"
}
stage_drill_watchdog() {
    local status=0
    scripts/demo.sh --watchdog && .venv/bin/pytest -q -s tests/drill/test_watchdog_drill.py || status=1
    scripts/demo-down.sh || status=1
    return "$status"
}
stage_example() {  # the test's fixture brings the bed up and takes it down; down.sh again if pytest was killed
    local status=0
    .venv/bin/pytest -q -s tests/example || status=1
    tests/example/down.sh || status=1
    return "$status"
}
stage_molecule() {
    if [ -x scripts/molecule.sh ]; then scripts/molecule.sh all; else echo "no Molecule scenarios yet"; fi
}

for stage in "${stages[@]}"; do
    case "$stage" in
        setup|lint|unit|integration|ansible|molecule|drill|example) run_stage "$stage" "stage_$stage" ;;
        drill-watchdog) run_stage "$stage" stage_drill_watchdog ;;
        *) echo "test.sh: unknown stage '$stage' (stages: setup lint unit integration ansible molecule drill drill-watchdog example)" >&2; exit 2 ;;
    esac
    # Nothing after a failed setup can be trusted.
    if [ "$stage" = setup ] && [ "$failed" -ne 0 ]; then break; fi
done

printf '\n======== timing ========\n'
printf '%s\n' "${summary[@]}"
printf 'total        %5ss\n' "$SECONDS"
exit "$failed"
