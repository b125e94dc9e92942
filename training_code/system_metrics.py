"""System metrics in SageMaker's profiler format, sampled with psutil (stdlib + psutil only: it ships alone).

Writes JSON lines to `<out>/system/incremental/<YYYYMMDDHH>/<epoch seconds>.<node>.json`, one file per
minute window, each record {"Type", "Name", "Dimension", "Value", "NodeId", "Timestamp"} as SageMaker's
system monitor writes them, so smdebug's SystemMetricsReader and our profiler rules read them unchanged.

Used by the local runner for every job with a ProfilerConfig, and by train.py itself in self-hosted rules
mode on SageMaker (where Debugger's own monitor is not available).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import psutil


class SystemMetricsSampler:
    def __init__(self, out_dir: str | Path, interval_ms: int = 500, node_id: str = "algo-1", window_s: int = 60):
        self.out_dir, self.interval_s, self.node_id = Path(out_dir), interval_ms / 1000.0, node_id
        self.window_s = window_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file = None
        self._window_start = 0
        self._last_disk = psutil.disk_io_counters()
        self._last_net = psutil.net_io_counters()
        self._last_time = time.time()
        psutil.cpu_percent(percpu=True)  # the first call only primes the counters

    def sample(self) -> list[dict]:
        now = time.time()
        elapsed = max(now - self._last_time, 1e-6)
        records = [self._record("cpu", f"cpu{i}", "CPUUtilization", value, now)
                   for i, value in enumerate(psutil.cpu_percent(percpu=True))]  # fmt: skip
        times = psutil.cpu_times_percent()
        records.append(self._record("cpu", "cpu_iowait", "CPUIOWait", getattr(times, "iowait", 0.0), now))
        records.append(self._record("memory", "MemoryUsedPercent", "Memory", psutil.virtual_memory().percent, now))
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        if disk and self._last_disk:
            read = (disk.read_bytes - self._last_disk.read_bytes) / elapsed
            write = (disk.write_bytes - self._last_disk.write_bytes) / elapsed
            records.append(self._record("io", "disk", "ReadThroughputInBytes", read, now))
            records.append(self._record("io", "disk", "WriteThroughputInBytes", write, now))
        if net and self._last_net:
            received = (net.bytes_recv - self._last_net.bytes_recv) / elapsed
            sent = (net.bytes_sent - self._last_net.bytes_sent) / elapsed
            records.append(self._record("network", "network", "ReceiveThroughputInBytes", received, now))
            records.append(self._record("network", "network", "TransmitThroughputInBytes", sent, now))
        self._last_disk, self._last_net, self._last_time = disk, net, now
        return records

    def _record(self, kind: str, name: str, dimension: str, value: float, timestamp: float) -> dict:
        return {"Type": kind, "Name": name, "Dimension": dimension, "Value": round(float(value), 3),
                "NodeId": self.node_id, "Timestamp": round(timestamp, 3)}  # fmt: skip

    def _write(self, records: list[dict]) -> None:
        now = time.time()
        if self._file is None or now - self._window_start >= self.window_s:
            if self._file:
                self._file.close()
            self._window_start = int(now)
            hour = time.strftime("%Y%m%d%H", time.gmtime(now))
            path = self.out_dir / "system" / "incremental" / hour / f"{self._window_start}.{self.node_id}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a")  # noqa: SIM115 - closed when the window rolls over or on stop
        self._file.write("".join(json.dumps(r) + "\n" for r in records))
        self._file.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write(self.sample())

    def start(self) -> SystemMetricsSampler:
        self._thread = threading.Thread(target=self._run, daemon=True, name="system-metrics")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._file:
            self._file.close()
            self._file = None

    def __enter__(self) -> SystemMetricsSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="sample system metrics in SageMaker's format")
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval-ms", type=int, default=500)
    parser.add_argument("--node-id", default="algo-1")
    parser.add_argument("--pid", type=int, default=0, help="stop when this process exits")
    args = parser.parse_args()
    with SystemMetricsSampler(args.out, args.interval_ms, args.node_id):
        while not args.pid or psutil.pid_exists(args.pid):
            time.sleep(0.5)
            if not args.pid and os.getppid() == 1:
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
