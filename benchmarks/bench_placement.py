"""Measure the placement gate's costs and print a table: run ``.venv/bin/python benchmarks/bench_placement.py``.

- new task process: what every task process does before the task's own code runs, ``gate.gate()`` (load the
  document through ``observe.load_placement``, decide, log the line, record the decision in ``decisions.jsonl`` and
  count it in Airflow's metrics), with a warm on-disk cache, each in a fresh Python process (as every Airflow task
  is), for documents of 50 and 10,000 entries (target: median under 5 ms, whatever the size);
- cold: the same with the cache removed each time, fetching from a loopback HTTP server (target: under 20 ms for
  50 entries);
- parse: parse and validate a 10,000-entry document, seed form and mixed (target: under 100 ms; once per TTL);
- requests: 200 task decisions spread over a minute, TTL 30 s, counted at the server (target: at most 3).

The fresh-process rows time the first ``gate()`` call inside the new process, as the task's own (``run``) decision,
with the settings built from plain values as tests/unit/test_gate.py builds them (``configured()``, which reads them
from Airflow's configuration, is left out) and a log that keeps its lines. Metrics go to Airflow's default (no
``[metrics]`` backend configured), as the roles leave it. For reference: the imports, timed in the same
processes: Airflow's task runner (which every task process has loaded before a task starts), then the gate module
on top of it (the policy imports it when the first task decides), and the process's whole run.
"""

from __future__ import annotations

import argparse
import json
import os
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
from airflow_placement.observe import RECORD_FILE

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
started = time.perf_counter()
import airflow.sdk.execution_time.task_runner
runner_loaded = time.perf_counter()
from airflow_placement import gate
gate_loaded = time.perf_counter()
from datetime import datetime, UTC
from types import SimpleNamespace
from airflow_placement.settings import gate_settings

class Lines:
    def __init__(self):
        self.lines = []
    def _add(self, msg, *args):
        self.lines.append(msg % args)
    info = warning = error = _add

config = {"source": sys.argv[1], "cache_dir": sys.argv[2], "ttl": "3600", "max_staleness": "7200", "timeout": "2"}
settings = gate_settings({"host": "server-2.tld"}, config)
now = datetime.now(UTC)
context = {
    "run_id": "scheduled__" + now.isoformat(),
    "logical_date": now,
    "dag_run": SimpleNamespace(run_after=now, run_type="scheduled"),
}
log = Lines()
decide_started = time.perf_counter()
decision = gate.gate(context, dag_id="dag_7", task_id="t", settings=settings, log=log)
elapsed = time.perf_counter() - decide_started
assert decision.run and len(log.lines) == 1, log.lines
print(json.dumps({
    "gate_ms": elapsed * 1000,
    "runner_import_ms": (runner_loaded - started) * 1000,
    "gate_import_ms": (gate_loaded - runner_loaded) * 1000,
}))
"""


class Children:
    """Milliseconds measured in new processes: ``gate()``, the imports ahead of it, and each process as a whole."""

    def __init__(self) -> None:
        self.runner_import: list[float] = []
        self.gate_import: list[float] = []
        self.whole: list[float] = []

    def run(self, count: int, server: Server, cache_dir: Path, env: dict[str, str], keep: bool = True) -> list[float]:
        """Run ``count`` new processes deciding from ``cache_dir``'s warm copy; return their ``gate()`` times.

        With ``keep=False`` (a warm-up) nothing is kept of the imports' and the processes' times.

        :raises RuntimeError: when a process failed, asked the source (the cache was not warm) or recorded no decision.
        """
        record = cache_dir / RECORD_FILE
        requests, records = server.requests, self._lines(record)
        gate_ms = []
        for _ in range(count):
            started = time.perf_counter()
            child = subprocess.run(
                [sys.executable, "-c", _CHILD, server.url, str(cache_dir)],
                check=False,
                capture_output=True,
                text=True,
                env=env,
            )
            whole = (time.perf_counter() - started) * 1000
            if child.returncode != 0:
                raise RuntimeError(f"a new process failed ({child.returncode}):\n{child.stderr[-3000:]}")
            measured = json.loads(child.stdout)
            gate_ms.append(measured["gate_ms"])
            if keep:
                self.whole.append(whole)
                self.runner_import.append(measured["runner_import_ms"])
                self.gate_import.append(measured["gate_import_ms"])
        if server.requests != requests:
            raise RuntimeError(f"the new processes asked the source {server.requests - requests} times: cache not warm")
        if self._lines(record) != records + count:
            raise RuntimeError(f"{record}: {self._lines(record) - records} decisions recorded, not {count}")
        return gate_ms

    def reference_rows(self) -> list[tuple[str, str, str, str]]:
        """The rows of the imports and of the processes as a whole, for reference (no target)."""
        measured = (
            ("airflow.sdk's task runner (loaded in every task process)", self.runner_import),
            ("airflow_placement.gate on top of it (the policy's first gate)", self.gate_import),
            ("each process from start to exit", self.whole),
        )
        return [
            (
                f"  for reference, in the same {len(values)} processes: {name}",
                ms(statistics.median(values)),
                ms(p95(values)),
                "",
            )
            for name, values in measured
        ]

    @staticmethod
    def _lines(path: Path) -> int:
        return len(path.read_text().splitlines()) if path.exists() else 0


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
    # The new processes import Airflow: give them a configuration of their own (the first one writes it).
    env = {**os.environ, "AIRFLOW_HOME": str(workdir / "airflow-home")}
    env.pop("HOST_HOSTNAME", None)
    children = Children()
    try:
        for entries in (50, 10_000):
            server = Server(mixed_document(entries))
            try:
                settings = FetchSettings(
                    server.url, ttl=3600, max_staleness=7200, timeout=2, cache_dir=workdir / f"cache-{entries}"
                )
                load_placement(settings)  # warm the cache (and write the snapshot)
                children.run(1, server, settings.cache_dir, env, keep=False)  # Airflow's files into the page cache
                decided = children.run(processes, server, settings.cache_dir, env)
                rows.append(
                    (
                        f"new task process, warm cache, {entries:,} entries: gate() ({processes} processes)",
                        ms(statistics.median(decided)),
                        ms(p95(decided)),
                        "< 5 ms",
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

        rows.extend(children.reference_rows())

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
