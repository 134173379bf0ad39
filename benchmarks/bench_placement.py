"""Measure the placement gate's costs and print a table: run ``.venv/bin/python benchmarks/bench_placement.py``.

- warm: ``load_placement`` + ``decide`` per task with a warm on-disk cache (target: median under 2 ms);
- cold: the same with the cache removed each time, fetching from a loopback HTTP server (target: under 20 ms);
- parse: parse and validate a 10,000-entry document, seed form and mixed (target: under 100 ms);
- requests: 200 task decisions spread over a minute, TTL 30 s, counted at the server (target: at most 3).

All calls run in this one process; the "new task process" and cold rows clear the in-memory parse memo before each
call, as a fresh Airflow task process starts without it. The served document has 50 entries.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from airflow_placement import fetch
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


def ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    calls, cold_calls, parses = (200, 20, 3) if args.quick else (2000, 200, 10)

    rows: list[tuple[str, str, str, str]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    server = Server(seed_document(50))
    try:
        settings = FetchSettings(server.url, ttl=30, max_staleness=300, timeout=2, cache_dir=workdir / "cache")

        def gate() -> None:
            loaded = load_placement(settings)
            decide(loaded.placement, dag_id="dag_7", task_id="t", host="server-2.tld", when=WHEN)

        gate()
        warm = timings(calls, gate)
        # An Airflow task is a new process: its in-memory parse memo is empty, so it validates the cached copy once.
        fresh = timings(calls, gate, before=fetch._parsed.clear)
        rows.append(
            (f"warm cache: load + decide ({calls} calls)", ms(statistics.median(warm)), ms(p95(warm)), "< 2 ms")
        )
        rows.append(
            (
                f"warm cache, new task process: load + decide ({calls} calls)",
                ms(statistics.median(fresh)),
                ms(p95(fresh)),
                "< 2 ms",
            )
        )

        def clear() -> None:
            shutil.rmtree(settings.cache_dir, ignore_errors=True)
            fetch._parsed.clear()

        cold = timings(cold_calls, gate, before=clear)
        rows.append(
            (
                f"cold: fetch from loopback + decide ({cold_calls} calls)",
                ms(statistics.median(cold)),
                ms(p95(cold)),
                "< 20 ms",
            )
        )

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
                loaded = load_placement(ttl_settings, clock=lambda: now[0])
                decide(loaded.placement, dag_id=f"dag_{i % 50}", task_id="t", host="server-1.tld", when=WHEN)
            rows.append(("requests: 200 decisions over 60 s, TTL 30 s", f"{counted.requests} requests", "", "<= 3"))
        finally:
            counted.close()
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)

    header = ("measurement", "median", "p95", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
