"""``airflow-placement``: check, query and show placement documents from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from airflow_placement import __version__
from airflow_placement.decision import decide
from airflow_placement.document import DocumentError, Placement, normalize_host
from airflow_placement.fetch import PlacementUnavailable, load_placement, read_source
from airflow_placement.settings import KEYS, SECTION, gate_settings

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


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
    decide_cmd.add_argument("--cache-dir", help="the cache directory shared by this server's tasks")

    show = commands.add_parser(
        "show",
        help="print who owns what",
        description="Print a table of DAG (or pattern) and task to owner, with scheduled handovers.",
    )
    show.add_argument("source", metavar="SRC", help="path or URL of the document")
    return parser


def _check(args: argparse.Namespace) -> int:
    try:
        placement = read_source(args.file)
    except DocumentError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return EXIT_INVALID
    problems = []
    if args.hosts is not None:
        known = {normalize_host(h) for h in args.hosts.split(",") if h.strip()}
        for entry in placement.entries:
            schedules = [("", entry.schedule)] + [(f" task {t!r}:", s) for t, s in entry.tasks.items()]
            for label, schedule in schedules:
                for owner in sorted(schedule.owners() - known):
                    problems.append(
                        f"{args.file}:{entry.line}: {entry.key}:{label} owner {owner!r} is not one of the servers "
                        f"({', '.join(sorted(known))})"
                    )
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.file}: valid, {len(placement.entries)} entries, revision {placement.revision}")
    return EXIT_OK


def _decide(args: argparse.Namespace) -> int:
    config = {key: os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}") for key in KEYS}
    overrides = {key: getattr(args, key, None) for key in KEYS}
    settings = gate_settings(overrides, config)
    if not settings.host:
        raise PlacementUnavailable("this server's name is unknown: pass --host or set HOST_HOSTNAME")
    loaded = load_placement(settings.fetch)
    now = datetime.now(UTC)
    when = args.logical_date or now
    result = decide(
        loaded.placement, dag_id=args.dag_id, task_id=args.task_id, host=settings.host, when=when, now=now
    )
    output = {**result.as_json(), "document_age": round(loaded.age, 3), "document_from": loaded.origin}
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
    lines.append(f"revision {placement.revision}; a DAG that no entry matches runs nowhere")
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"check": _check, "decide": _decide, "show": _show}[args.command]
    try:
        return handler(args)
    except (DocumentError, PlacementUnavailable, ValueError, OSError) as exc:
        print(f"airflow-placement {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
