"""``airflow-placement``: check, query and show placement documents from the command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_placement import __version__
from airflow_placement.decision import decide
from airflow_placement.document import DocumentError, Placement, normalize_host
from airflow_placement.fetch import PlacementUnavailable, load_placement, read_source
from airflow_placement.objects import add_commands as add_objects_commands
from airflow_placement.objects import objects_command
from airflow_placement.publish import Publisher, PublishError
from airflow_placement.rerun import Airflow, ApiError, describe, select
from airflow_placement.serve import ServeError, serve_command, token_command, upload_command
from airflow_placement.serve import add_commands as add_serve_commands
from airflow_placement.settings import KEYS, SECTION, gate_settings
from airflow_placement.signing import load_public_key, load_signing_key, verify, write_key_pair
from airflow_placement.watch import WatchError, watch_command
from airflow_placement.watch import add_commands as add_watch_commands

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _seconds(text: str) -> float:
    """A number of seconds: finite and not negative."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a finite number of seconds >= 0: {text!r}")
    return value


def _parse_date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date and time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-placement",
        description="Check, query and show placement documents: which Airflow server owns which DAG.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="validate a document",
        description="Validate a placement document. Exit 0 when valid; otherwise print one FILE:LINE: problem per "
        "line on stderr and exit 1.",
    )
    check.add_argument("file", metavar="FILE", help="path or URL of the document")
    check.add_argument(
        "--hosts", metavar="H1,H2,...", help="the servers that exist: reject owners that are not among them"
    )
    check.add_argument("--public-key", help="the publisher's public key (base64): the document must be signed by it")

    decide_cmd = commands.add_parser(
        "decide",
        help="decide whether a host runs a task",
        description="Decide, as the gated operator would, whether HOST runs the task of the DAG run with the given "
        "logical date. Prints one JSON object with decision ('run' or 'skip'), owner and reason. Uses the server's "
        f"cache and lease like the operator; defaults come from AIRFLOW__{SECTION.upper()}__* variables. Exit 0 "
        "when a decision was made; 1, with the reason on stderr, when no trustworthy document is available.",
    )
    decide_cmd.add_argument("--source", help="URL or path of the document (default: $AIRFLOW__PLACEMENT__SOURCE)")
    decide_cmd.add_argument("--dag-id", required=True)
    decide_cmd.add_argument("--task-id", help="decide for this task (per-task overrides apply)")
    decide_cmd.add_argument("--host", help="this server's name (default: $HOST_HOSTNAME)")
    decide_cmd.add_argument(
        "--logical-date", type=_parse_date, help="the run's logical date, ISO 8601; UTC when no offset (default: now)"
    )
    decide_cmd.add_argument("--ttl", type=float, help="seconds a confirmed copy is used without a request (30)")
    decide_cmd.add_argument("--max-staleness", type=float, help="seconds past which a copy is not trusted (300)")
    decide_cmd.add_argument(
        "--clock-skew", type=float, help="seconds this server's clock may differ from the publisher's (60)"
    )
    decide_cmd.add_argument("--timeout", type=float, help="seconds to wait for the source (5)")
    decide_cmd.add_argument("--retries", type=int, help="retries of a failed request (2)")
    decide_cmd.add_argument("--token-env", help="environment variable holding a bearer token for the source")
    decide_cmd.add_argument("--ca-bundle", help="a CA bundle (PEM) the source's certificate is checked against")
    decide_cmd.add_argument("--cache-dir", help="the cache directory shared by this server's tasks")
    decide_cmd.add_argument("--public-key", help="the publisher's public key: refuse documents it did not sign")

    show = commands.add_parser(
        "show",
        help="print who owns what",
        description="Print a table of DAG (or pattern) and task to owner, with scheduled handovers.",
    )
    show.add_argument("source", metavar="SRC", help="path or URL of the document")

    _add_publisher_commands(commands)
    add_serve_commands(commands, seconds=_seconds)
    add_watch_commands(commands)
    add_objects_commands(commands)
    return parser


def _add_publisher_commands(commands: Any) -> None:
    """The publisher's side: publish-lock, publish, publish-commit, publish-abort, renew, rerun."""
    publish = commands.add_parser(
        "publish",
        help="issue the next document (a publisher's command)",
        description="Issue the next placement document: DESIRED (who should own what) spliced onto the last "
        "published document so that every change of owner is a handover at least LEAD seconds ahead (a forced "
        "failover of --failed excepted), with the next serial and the issue time in @meta. Takes the publishing "
        "lock (one publisher at a time) and writes the document to --out for distribution; finish with "
        "publish-commit once every copy is out, or publish-abort. Prints the changes and the pending handovers.",
    )
    publish.add_argument("desired", metavar="DESIRED", help="path of the desired document (its @meta is ignored)")
    publish.add_argument("--state-dir", required=True, help="the publisher's state directory")
    publish.add_argument(
        "--lead", type=_seconds, required=True, help="seconds: the longest max_staleness plus the clock-skew margin"
    )
    publish.add_argument("--out", help="where to write the issued document")
    publish.add_argument("--hosts", metavar="H1,H2,...", help="the servers that exist: refuse other owners")
    publish.add_argument("--failed", metavar="HOST", help="force: move what HOST owns at once (HOST is known down)")
    publish.add_argument(
        "--since",
        type=_parse_date,
        help="with --failed: move HOST's runs dated from this time on (ISO 8601): you assert HOST ran none of them "
        "(default: now plus --clock-skew)",
    )
    publish.add_argument(
        "--clock-skew",
        type=float,
        default=0.0,
        help="seconds any two clocks may differ by: without --since, a forced failover moves the runs dated from "
        "now plus this (default 0)",
    )
    publish.add_argument("--baseline", help="what the servers hold when nothing was published from this state yet")
    publish.add_argument("--check", action="store_true", help="print the plan; issue nothing, lock nothing")
    publish.add_argument(
        "--wait", type=_seconds, default=0.0, help="seconds to wait for another publish to finish (default 0)"
    )
    publish.add_argument("--lock-token", help="the publishing lock taken with publish-lock (default: take it now)")
    publish.add_argument("--signing-key", metavar="FILE", help="sign the document with this private key (keygen)")

    lock = commands.add_parser(
        "publish-lock",
        help="take the publishing lock",
        description="Take the publishing lock and print its token, waiting up to --wait seconds for another "
        "publish to end. Take it before reading what the publish depends on (the record of failed servers) and "
        "pass the token to publish; publish-commit or publish-abort releases it.",
    )
    lock.add_argument("--state-dir", required=True, help="the publisher's state directory")
    lock.add_argument("--wait", type=_seconds, default=0.0, help="seconds to wait (default 0: stop at once)")

    for name, text in (
        ("publish-commit", "every copy of the pending document is out: it becomes the published one"),
        (
            "publish-abort",
            "give up the pending document and release the publishing lock (its serial stays used; a forced "
            "failover is kept as the published document instead)",
        ),
    ):
        command = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        command.add_argument("--state-dir", required=True, help="the publisher's state directory")

    renew = commands.add_parser(
        "renew",
        help="renew the lease of the published document",
        description="Write a new renewal time into the published document (same content) and print it or write it "
        "to --out. File publishing needs this at least every max_staleness minus the time a copy takes to reach the "
        "servers: a server trusts a file's copy only until its renewal time plus max_staleness. Refused while a "
        "publish is under way. After a publish-abort the document is re-issued under a new serial, so that a server "
        "holding the given-up copy takes it.",
    )
    renew.add_argument("--state-dir", required=True, help="the publisher's state directory")
    renew.add_argument("--out", help="where to write the renewed document (default: standard output)")
    renew.add_argument("--signing-key", metavar="FILE", help="sign the renewed document with this private key")

    keygen = commands.add_parser(
        "keygen",
        help="make the publisher's signing key",
        description="Write a new Ed25519 private key to FILE (mode 0600; an existing file is never replaced) and "
        "its public key to FILE.pub, and print the public key: the servers' [placement] public_key. Give FILE to "
        "publish and renew as --signing-key.",
    )
    keygen.add_argument("file", metavar="FILE", help="where to write the private key")

    rerun = commands.add_parser(
        "rerun",
        help="re-run on a successor what a failed server missed",
        description="After a forced failover dated back to --since, clear through the successor's Airflow REST API "
        "the task instances it skipped only because the failed server owned them (the document --before the move "
        "gave them to --failed, the one --after gives them to --successor), with a logical date in [since, until), "
        "so that they run there once. Prints what it clears; --dry-run only asks Airflow what would be cleared.",
    )
    rerun.add_argument("--api", required=True, help="the successor's Airflow base URL, e.g. https://server-2:8080")
    rerun.add_argument("--ca", help="CA bundle that trusts the API server's certificate (default: the system's)")
    rerun.add_argument("--user", required=True, help="the API user")
    rerun.add_argument(
        "--password-env", required=True, metavar="VAR", help="environment variable holding the user's password"
    )
    rerun.add_argument("--before", required=True, help="path of the document before the move")
    rerun.add_argument("--after", required=True, help="path of the document after the move")
    rerun.add_argument("--failed", required=True, metavar="HOST", help="the failed server")
    rerun.add_argument("--successor", required=True, metavar="HOST", help="the server whose API this is")
    rerun.add_argument("--since", required=True, type=_parse_date, help="start of the window (ISO 8601)")
    rerun.add_argument("--until", type=_parse_date, help="end of the window, exclusive (default: now)")
    rerun.add_argument("--dry-run", action="store_true", help="clear nothing")


def _check(args: argparse.Namespace) -> int:
    try:
        placement = read_source(args.file)
    except DocumentError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return EXIT_INVALID
    if args.public_key is not None:
        verify(placement.meta, load_public_key(args.public_key))
    problems = _unknown_owners(placement, args.hosts, args.file) if args.hosts is not None else []
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_INVALID
    print(
        f"{args.file}: valid, {len(placement.entries)} entries, revision {placement.revision}; {protections(placement)}"
    )
    return EXIT_OK


def protections(placement: Placement) -> str:
    """What ``@meta`` gives a document, or which protections it lacks without it."""
    meta = placement.meta
    if meta is None:
        return (
            "no @meta, so no serial (an older copy can replace it) and no publisher time (a file's copy is trusted "
            "whenever it is read and never expires)"
        )
    renewed = f", renewed {meta.renewed.isoformat()}" if meta.renewed else ""
    return f"serial {meta.serial}, issued {meta.issued.isoformat()}{renewed}"


def _write(path: str | None, text: str) -> None:
    if path is None:
        print(text, end="")
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)


def _publish(args: argparse.Namespace) -> int:
    desired = read_source(args.desired)
    if args.hosts is not None and (problems := _unknown_owners(desired, args.hosts, args.desired)):
        raise PublishError(problems[0])
    baseline = read_source(args.baseline) if args.baseline and Path(args.baseline).exists() else None
    now = datetime.now(UTC)
    text, plan = Publisher(Path(args.state_dir), _signing_key(args)).begin(
        desired,
        lead=args.lead,
        failed=args.failed,
        since=args.since,
        clock_skew=args.clock_skew,
        check=args.check,
        wait=args.wait,
        now=now,
        baseline=baseline,
        token=args.lock_token,
    )
    serial = text.split("serial: ", 1)[1].split("\n", 1)[0]
    verb = "would issue" if args.check else "issued"
    print(f"{verb} serial {serial}: {len(plan.changes)} change{'s' * (len(plan.changes) != 1)} of owner")
    for change in plan.changes:
        print(f"  {change.describe(now)}")
    pending = plan.pending(now)
    print(f"pending handovers: {len(pending) or 'none'}")
    for line in pending:
        print(f"  {line}")
    if not args.check and args.out:
        _write(args.out, text)
    return EXIT_OK


def _publish_lock(args: argparse.Namespace) -> int:
    print(Publisher(Path(args.state_dir)).acquire(wait=args.wait))
    return EXIT_OK


def _publish_commit(args: argparse.Namespace) -> int:
    print(f"published serial {Publisher(Path(args.state_dir)).commit()}")
    return EXIT_OK


def _publish_abort(args: argparse.Namespace) -> int:
    kept = Publisher(Path(args.state_dir)).abort()
    if kept is not None:
        print(
            f"publish-abort: serial {kept} is a forced failover, which a server may already run by: it stays the "
            "published document (renewals carry it to every server); record the failover before the next publish"
        )
        return 0
    print("publish aborted: the publishing lock is released")
    return EXIT_OK


def _rerun(args: argparse.Namespace) -> int:
    password = os.environ.get(args.password_env)
    if not password:
        raise ValueError(f"the environment variable {args.password_env} (--password-env) is empty or not set")
    api = Airflow(args.api, args.user, password, ca=args.ca)
    api.sign_in()
    runs = select(
        api.skipped_since(args.since),
        before=read_source(args.before),
        after=read_source(args.after),
        failed=args.failed,
        successor=args.successor,
        since=args.since,
        until=args.until or datetime.now(UTC),
    )
    note = f"re-run on {args.successor}: {args.failed} failed (forced failover since {args.since.isoformat()})"
    planned = [ti for run in runs for ti in api.clear(run, dry_run=True, note=note)]
    if not planned:
        print(f"nothing to re-run: no task instance the failed server owned was skipped on {args.successor}")
        return EXIT_OK
    if args.dry_run:
        print(f"would clear on {args.successor} ({len(planned)} task instances):")
        print("\n".join(f"  {describe(ti)}" for ti in planned))
        return EXIT_OK
    cleared = [ti for run in runs for ti in api.clear(run, dry_run=False, note=note)]
    print(f"cleared on {args.successor} ({len(cleared)} task instances):")
    print("\n".join(f"  {describe(ti)}" for ti in cleared))
    return EXIT_OK


def _renew(args: argparse.Namespace) -> int:
    _write(args.out, Publisher(Path(args.state_dir), _signing_key(args)).renew())
    return EXIT_OK


def _signing_key(args: argparse.Namespace) -> Any:
    return load_signing_key(Path(args.signing_key)) if args.signing_key else None


def _keygen(args: argparse.Namespace) -> int:
    public = write_key_pair(Path(args.file))
    print(f"wrote the private key to {args.file} (mode 0600) and the public key to {args.file}.pub", file=sys.stderr)
    print(public)
    return EXIT_OK


def _unknown_owners(placement: Placement, hosts: str, origin: str) -> list[str]:
    known = {normalize_host(h) for h in hosts.split(",") if h.strip()}
    problems = []
    for entry in placement.entries:
        schedules = [("", entry.schedule)] + [(f" task {t!r}:", s) for t, s in entry.tasks.items()]
        for label, schedule in schedules:
            for owner in sorted(schedule.owners() - known):
                problems.append(
                    f"{origin}:{entry.line}: {entry.key}:{label} owner {owner!r} is not one of the servers "
                    f"({', '.join(sorted(known))})"
                )
    return problems


def _decide(args: argparse.Namespace) -> int:
    config = {key: os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}") for key in KEYS}
    overrides = {key: getattr(args, key, None) for key in KEYS}
    settings = gate_settings(overrides, config)
    if not settings.host:
        raise PlacementUnavailable("this server's name is unknown: pass --host or set HOST_HOSTNAME")
    loaded = load_placement(settings.fetch)
    now = datetime.now(UTC)
    when = args.logical_date or now
    horizon = settings.fetch.horizon
    result = decide(
        loaded.placement,
        dag_id=args.dag_id,
        task_id=args.task_id,
        host=settings.host,
        when=when,
        now=now,
        horizon=horizon,
    )
    meta = loaded.placement.meta
    output = {
        **result.as_json(),
        "serial": meta.serial if meta else None,
        "document_age": round(loaded.age, 3),
        "document_from": loaded.origin,
    }
    if loaded.note:
        output["note"] = loaded.note
    print(json.dumps(output))
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    placement = read_source(args.source)
    print(render_table(placement, datetime.now(UTC)))
    return EXIT_OK


def render_table(placement: Placement, now: datetime) -> str:
    """A readable table of entry and task to owner, one row per owner period, marking handovers still to come."""
    rows = [("DAG / PATTERN", "TASK", "OWNER", "FROM (LOGICAL DATE)")]
    for entry in placement.entries:
        for task, schedule in [("*", entry.schedule), *entry.tasks.items()]:
            rows.append((entry.key, task, schedule.owner, "always" if not schedule.handovers else "before first"))
            for handover in schedule.handovers:
                pending = " (pending)" if handover.at > now else ""
                rows.append((entry.key, task, handover.owner, handover.at.isoformat() + pending))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]
    lines.append(f"revision {placement.revision}; {protections(placement)}; a DAG that no entry matches runs nowhere")
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "check": _check,
        "decide": _decide,
        "show": _show,
        "publish": _publish,
        "publish-lock": _publish_lock,
        "publish-commit": _publish_commit,
        "publish-abort": _publish_abort,
        "renew": _renew,
        "keygen": _keygen,
        "rerun": _rerun,
        "serve": serve_command,
        "serve-token": token_command,
        "upload": upload_command,
        "watch": watch_command,
        "objects": objects_command,
    }[args.command]
    try:
        return handler(args)
    except (
        DocumentError,
        PlacementUnavailable,
        PublishError,
        ApiError,
        ServeError,
        WatchError,
        ValueError,
        OSError,
    ) as exc:
        print(f"airflow-placement {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
