"""Measure the placement gate's costs and print a table: run ``.venv/bin/python benchmarks/bench_placement.py``.

- new task process: ``load_placement`` + ``decide`` with a warm on-disk cache, each in a fresh Python process (as
  every Airflow task is), for documents of 50 and 10,000 entries (target: median under 5 ms, whatever the size);
- cold: the same with the cache removed each time, fetching from a loopback HTTP server (target: under 20 ms for
  50 entries);
- parse: parse and validate a 10,000-entry document, seed form and mixed (target: under 100 ms; once per TTL);
- requests: 200 task decisions spread over a minute, TTL 30 s, counted at the server (target: at most 3).

The fresh-process rows time ``load_placement`` + ``decide`` inside the new process, after its imports (which an
Airflow task process has made anyway); the process's whole run, imports included, is given for reference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from airflow_placement.decision import decide
from airflow_placement.document import parse_document
from airflow_placement.fetch import FetchSettings, load_placement

WHEN = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def seed_document(entries: int) -> bytes:
    return "".join(f"dag_{i}: server-{i % 3 + 1}.tld\n" for i in range(entries)).encode()


def mixed_document(entries: int) -> bytes:
    """Seed form, with every tenth entry a handover and every tenth (offset by five) a per-task override."""
    lines = []
    for i in range(entries):
        if i % 10 == 0:
            handover = "    - {at: 2026-12-01T06:00:00Z, owner: server-2.tld}\n"
            lines.append(f"dag_{i}:\n  owner: server-1.tld\n  handover:\n{handover}")
        elif i % 10 == 5:
            lines.append(f"dag_{i}:\n  owner: server-2.tld\n  tasks:\n    publish: server-3.tld\n")
        else:
            lines.append(f"dag_{i}: server-{i % 3 + 1}.tld\n")
    lines.append('"etl_*": server-2.tld\n"*": server-1.tld\n')
    return "".join(lines).encode()


class Server:
    """A loopback HTTP server that serves one document with an ETag and counts requests."""

    def __init__(self, body: bytes) -> None:
        self.body, self.requests = body, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body, written apart, meet delayed ACKs: +40 ms

            def do_GET(self) -> None:
                outer.requests += 1
                if self.headers.get("If-None-Match") == '"v1"':
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", '"v1"')
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/airflow-dag-on-server.yaml"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def timings(calls: int, call: Callable[[], object], before: Callable[[], object] | None = None) -> list[float]:
    """Milliseconds per call, excluding ``before`` (run ahead of each call)."""
    out = []
    for _ in range(calls):
        if before is not None:
            before()
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


_CHILD = """
import json, sys, time
from datetime import datetime, UTC
from pathlib import Path
from airflow_placement.decision import decide
from airflow_placement.fetch import FetchSettings, load_placement
settings = FetchSettings(sys.argv[1], ttl=3600, max_staleness=7200, timeout=2, cache_dir=Path(sys.argv[2]))
started = time.perf_counter()
loaded = load_placement(settings)
result = decide(loaded.placement, dag_id="dag_7", task_id="t", host="server-2.tld", when=datetime.now(UTC))
elapsed = time.perf_counter() - started
assert loaded.origin == "cache", loaded.origin
print(json.dumps({"ms": elapsed * 1000, "decision": result.decision}))
"""


def fresh_processes(count: int, settings: FetchSettings) -> tuple[list[float], list[float]]:
    """Milliseconds of load + decide inside each of ``count`` new processes, and of each process as a whole."""
    inside, whole = [], []
    for _ in range(count):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, settings.source, str(settings.cache_dir)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        whole.append((time.perf_counter() - started) * 1000)
        inside.append(json.loads(out)["ms"])
    return inside, whole


def ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    processes, cold_calls, parses = (10, 5, 3) if args.quick else (40, 40, 10)

    rows: list[tuple[str, str, str, str]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    try:
        for entries in (50, 10_000):
            server = Server(mixed_document(entries))
            try:
                settings = FetchSettings(
                    server.url, ttl=3600, max_staleness=7200, timeout=2, cache_dir=workdir / f"cache-{entries}"
                )
                load_placement(settings)  # warm the cache (and write the snapshot)
                inside, whole = fresh_processes(processes, settings)
                rows.append(
                    (
                        f"new task process, warm cache, {entries:,} entries: load + decide ({processes} processes)",
                        ms(statistics.median(inside)),
                        ms(p95(inside)),
                        "< 5 ms",
                    )
                )
                rows.append(
                    (
                        "  the same process from start to exit, imports included (for reference)",
                        ms(statistics.median(whole)),
                        ms(p95(whole)),
                        "",
                    )
                )

                def gate(settings: FetchSettings = settings) -> None:
                    loaded = load_placement(settings)
                    decide(loaded.placement, dag_id="dag_7", task_id="t", host="server-2.tld", when=WHEN)

                def clear(settings: FetchSettings = settings) -> None:
                    shutil.rmtree(settings.cache_dir, ignore_errors=True)

                cold = timings(cold_calls, gate, before=clear)
                target = "< 20 ms" if entries == 50 else ""
                rows.append(
                    (
                        f"cold, {entries:,} entries: fetch from loopback, parse, snapshot, decide ({cold_calls} calls)",
                        ms(statistics.median(cold)),
                        ms(p95(cold)),
                        target,
                    )
                )
            finally:
                server.close()

        documents = {"seed form": seed_document(10_000), "mixed, 10% handovers/overrides": mixed_document(10_000)}
        for name, body in documents.items():
            parsed = timings(parses, partial(parse_document, body))
            median, slowest = ms(statistics.median(parsed)), ms(max(parsed))
            rows.append((f"parse + validate 10,000 entries, {name} ({parses}x)", median, f"max {slowest}", "< 100 ms"))

        counted = Server(seed_document(50))
        try:
            now = [1_000_000.0]
            ttl_settings = FetchSettings(counted.url, ttl=30, max_staleness=300, cache_dir=workdir / "ttl")
            for i in range(200):
                now[0] = 1_000_000.0 + i * 60 / 200
                loaded = load_placement(ttl_settings, clock=lambda: now[0], started=lambda: 0.0)
                decide(loaded.placement, dag_id=f"dag_{i % 50}", task_id="t", host="server-1.tld", when=WHEN)
            rows.append(("requests: 200 decisions over 60 s, TTL 30 s", f"{counted.requests} requests", "", "<= 3"))
        finally:
            counted.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    header = ("measurement", "median", "p95", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
