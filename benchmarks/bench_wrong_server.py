"""Wrong server, side by side: task wall time and containers started, today's operator against GatedDockerOperator.

Runs both benchmark DAGs (benchmarks/dags/wrong_server_bench.py) with a real `airflow dags test` as a server that
does not own them, against the real Podman socket and a placement document served over HTTP on 127.0.0.1, and prints
one table. Needs scripts/bootstrap.sh to have run.

    .venv/bin/python benchmarks/bench_wrong_server.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from airflow_harness import Airflow, containers_started, ensure_task_image

DOCUMENT = b"todays_operator: server-1\ngated_operator: server-1\n"
LOGICAL_DATE = "2026-11-20T05:00:00+00:00"


class _Handler(BaseHTTPRequestHandler):
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(DOCUMENT)))
        self.end_headers()
        self.wfile.write(DOCUMENT)

    def log_message(self, *args: object) -> None:
        pass


def _seconds(row: dict[str, str]) -> float:
    return (datetime.fromisoformat(row["end_date"]) - datetime.fromisoformat(row["start_date"])).total_seconds()


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    image = ensure_task_image()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/airflow-dag-on-server.yaml"
    with tempfile.TemporaryDirectory() as home:
        airflow = Airflow(Path(home), Path(home, "unused.yaml"), dags_folder=Path(__file__).parent / "dags")
        airflow.setup()
        rows = []
        for dag_id in ("todays_operator", "gated_operator"):
            before = _Handler.requests
            since = time.time() - 1
            start = time.monotonic()
            airflow.dags_test(dag_id, LOGICAL_DATE, "server-2", AIRFLOW__PLACEMENT__SOURCE=url, BENCH_SOURCE_URL=url)
            run_seconds = time.monotonic() - start
            tasks = airflow.task_instances(dag_id, LOGICAL_DATE)
            task_seconds = sorted(_seconds(t) for t in tasks)
            states = sorted({t["state"] for t in tasks})
            started = containers_started(image, since)
            rows.append(
                (
                    dag_id,
                    len(tasks),
                    task_seconds[len(task_seconds) // 2],
                    started,
                    _Handler.requests - before,
                    ",".join(states),
                    run_seconds,
                )
            )
    server.shutdown()
    header = ("operator (wrong server)", "tasks", "median task s", "containers", "requests", "states", "dags test s")
    print("{:26} {:>5} {:>13} {:>10} {:>8}  {:10} {:>11}".format(*header))
    for dag_id, n, median, started, requests, states, run_seconds in rows:
        print(f"{dag_id:26} {n:5d} {median:13.3f} {started:10d} {requests:8d}  {states:10} {run_seconds:11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
