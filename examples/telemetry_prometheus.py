"""peeklock's OpenTelemetry metrics served to Prometheus.

    .venv/bin/python examples/telemetry_prometheus.py            # serves :9464/metrics
    .venv/bin/python examples/telemetry_prometheus.py --once     # one scrape, printed

Needs opentelemetry-sdk and opentelemetry-exporter-prometheus (both in the
test extra: pip install '.[test]'). Starts the local emulator, instruments
peeklock, runs a processor over a few messages whose handlers outlast the
lock, and serves the metrics (messaging.client.*, messaging.process.duration,
peeklock.lock.*) on /metrics in Prometheus text format.
"""

import argparse
import time
import urllib.request

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

import peeklock
from peeklock import telemetry
from peeklock.testing import Emulator


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=9464, help="metrics port (0: a free one)")
    ap.add_argument("--once", action="store_true", help="scrape once, print, exit")
    args = ap.parse_args()

    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    server, _ = start_http_server(args.port, addr="127.0.0.1")
    port = server.server_address[1]
    telemetry.instrument()
    with Emulator.start("--queue", "orders", "--lock-duration", "5") as emu:
        with peeklock.Client.from_connection_string(emu.connection_string) as client:
            for i in range(6):
                client.send("orders", f"order {i}".encode(), message_id=f"o-{i}")
            summary = client.process(
                "orders",
                lambda msg: time.sleep(3 if msg.text.endswith("0") else 0),
                concurrency=3,
                max_messages=6,
                handle_signals=False,
            )
            print(summary)
    url = f"http://127.0.0.1:{port}/metrics"
    if args.once:
        with urllib.request.urlopen(url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(("messaging_", "peeklock_")):
                    print(line)
        return 0
    print(f"metrics on {url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
