"""System metrics in SageMaker Debugger's profiler format, sampled with psutil (stdlib + psutil only: this
file ships alone inside sourcedir.tar.gz).

Every `interval_ms` one sample is appended, as JSON lines, to
`<out>/system/incremental/<YYYYMMDDHH>/<minute epoch>.<node>.json` (one file per minute, as SageMaker writes
them; each line is flushed whole, so a reader can follow a running job). Records are
{"Type", "Name", "Dimension", "Value", "NodeId", "Timestamp"} with SageMaker's names:

  cpu      cpu<N>                           CPUUtilization, I/OWaitPercentage   (percent, per core)
  memory   MemoryUsedPercent                ""                                  (percent)
  i/o      IOPS, Read/WriteThroughputInBytesPerSecond   ""
  network  Receive/TransmitBytesPerSecond   Algorithm                            (host-wide counters)
  gpu      gpu<N>                           GPUUtilization, GPUMemoryUtilization (NVML or nvidia-smi)

Used by the local runner for every job with a ProfilerConfig, and by train.py itself in self-hosted rules mode
(accounts without SageMaker Debugger). Command line:
  python system_metrics.py --out DIR [--interval-ms 500] [--node-id algo-1] [--pid PID]
samples until PID exits (or, without --pid, until SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("system_metrics")
NODE_ID = re.compile(r"^algo-\d+$")  # smdebug's readers only pick up files named <epoch>.algo-<n>.json
WINDOW_S = 60


class GpuProbe:
    """GPU utilisation and memory: NVML if the nvidia-ml-py module imports, else nvidia-smi, else none."""

    def __init__(self) -> None:
        self.source = "none"
        self._nvml: Any = None
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            self._nvml, self.source = pynvml, "nvml"
        except Exception:
            self._smi = shutil.which("nvidia-smi")
            if self._smi:
                self.source = "nvidia-smi"

    def read(self) -> list[tuple[int, float, float]]:
        """[(index, utilisation %, memory used %)]"""
        if self.source == "nvml":
            nvml, result = self._nvml, []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                result.append(
                    (
                        index,
                        float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                        100.0 * memory.used / memory.total if memory.total else 0.0,
                    )
                )
            return result
        if self.source == "nvidia-smi":
            query = [
                self._smi,
                "--query-gpu=index,utilization.gpu,memory.used,memory.total",
                "--format=csv,noheader,nounits",
            ]
            output = subprocess.run(query, capture_output=True, text=True, timeout=5, check=True).stdout
            result = []
            for line in output.strip().splitlines():
                index, util, used, total = (float(part) for part in line.split(","))
                result.append((int(index), util, 100.0 * used / total if total else 0.0))
            return result
        return []


class SystemMetricsSampler:
    """Samples this host every `interval_ms` on a daemon thread; `start()`/`stop()` or a `with` block."""

    def __init__(self, out_dir: str | Path, interval_ms: int = 500, node_id: str = "algo-1"):
        if not NODE_ID.match(node_id):
            raise ValueError(f"node_id must look like algo-<n> (SageMaker's host names), got {node_id!r}")
        if interval_ms < 10:
            raise ValueError(f"interval_ms must be at least 10, got {interval_ms}")
        self.out_dir, self.interval_s, self.node_id = Path(out_dir), interval_ms / 1000.0, node_id
        self.samples = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: Any = None
        self._window = -1
        self._gpu = GpuProbe()
        self._last: tuple[float, Any, Any] | None = None

    def _prime(self) -> None:
        # psutil's percentages are "since the previous call": the first call only sets the baseline.
        psutil.cpu_times_percent(percpu=True)
        self._last = (time.time(), psutil.disk_io_counters(), psutil.net_io_counters())

    def _record(self, kind: str, name: str, dimension: str, value: float, now: float) -> dict[str, Any]:
        return {
            "Type": kind,
            "Name": name,
            "Dimension": dimension,
            "Value": round(float(value), 2),
            "NodeId": self.node_id,
            "Timestamp": round(now, 6),
        }

    def sample(self) -> list[dict[str, Any]]:
        """One sample of every metric, all stamped with the same time."""
        if self._last is None:
            self._prime()
            time.sleep(0.05)
        now = time.time()
        records = []
        for index, times in enumerate(psutil.cpu_times_percent(percpu=True)):
            busy = max(0.0, 100.0 - times.idle - getattr(times, "iowait", 0.0))
            records.append(self._record("cpu", f"cpu{index}", "CPUUtilization", busy, now))
            records.append(self._record("cpu", f"cpu{index}", "I/OWaitPercentage", getattr(times, "iowait", 0.0), now))
        records.append(self._record("memory", "MemoryUsedPercent", "", psutil.virtual_memory().percent, now))
        last_time, last_disk, last_net = self._last
        elapsed = max(now - last_time, 1e-6)
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        if disk is not None and last_disk is not None:
            operations = (disk.read_count - last_disk.read_count) + (disk.write_count - last_disk.write_count)
            records.append(self._record("i/o", "IOPS", "", operations / elapsed, now))
            records.append(
                self._record(
                    "i/o",
                    "ReadThroughputInBytesPerSecond",
                    "",
                    (disk.read_bytes - last_disk.read_bytes) / elapsed,
                    now,
                )
            )
            records.append(
                self._record(
                    "i/o",
                    "WriteThroughputInBytesPerSecond",
                    "",
                    (disk.write_bytes - last_disk.write_bytes) / elapsed,
                    now,
                )
            )
        if net is not None and last_net is not None:
            records.append(
                self._record(
                    "network",
                    "ReceiveBytesPerSecond",
                    "Algorithm",
                    (net.bytes_recv - last_net.bytes_recv) / elapsed,
                    now,
                )
            )
            records.append(
                self._record(
                    "network",
                    "TransmitBytesPerSecond",
                    "Algorithm",
                    (net.bytes_sent - last_net.bytes_sent) / elapsed,
                    now,
                )
            )
        for index, utilisation, memory in self._gpu.read():
            records.append(self._record("gpu", f"gpu{index}", "GPUUtilization", utilisation, now))
            records.append(self._record("gpu", f"gpu{index}", "GPUMemoryUtilization", memory, now))
        self._last = (now, disk, net)
        return records

    def path_for(self, timestamp: float) -> Path:
        minute = int(timestamp) // WINDOW_S * WINDOW_S
        hour = time.strftime("%Y%m%d%H", time.gmtime(minute))
        return self.out_dir / "system" / "incremental" / hour / f"{minute}.{self.node_id}.json"

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        window = int(records[0]["Timestamp"]) // WINDOW_S
        if window != self._window:
            self._close_file()
            path = self.path_for(records[0]["Timestamp"])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file, self._window = open(path, "a", encoding="utf-8"), window  # noqa: SIM115 - kept open per window
        # One write per sample, then flush: a reader sees whole lines only.
        self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._file.flush()
        self.samples += 1

    def sample_once(self) -> None:
        try:
            self.write(self.sample())
        except Exception:  # one failed sample must not end profiling; it is counted and logged
            self.errors += 1
            log.exception("system metrics sample failed (%d so far)", self.errors)

    def _run(self) -> None:
        next_due = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_due - time.monotonic())):
            self.sample_once()
            # keep the cadence (sampling itself takes time); after a stall, carry on rather than burst
            next_due = max(next_due + self.interval_s, time.monotonic())

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def start(self) -> SystemMetricsSampler:
        self._prime()
        self._thread = threading.Thread(target=self._run, daemon=True, name="system-metrics")
        self._thread.start()
        log.info(
            "sampling system metrics every %.0f ms into %s (GPU: %s)",
            self.interval_s * 1000,
            self.out_dir,
            self._gpu.source,
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._last is not None and time.time() - self._last[0] >= min(0.05, self.interval_s):
            self.sample_once()  # the tail since the last tick is measured too (a short job gets a sample)
        self._close_file()
        log.info("system metrics: %d samples written, %d failed", self.samples, self.errors)

    def __enter__(self) -> SystemMetricsSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="sample system metrics in SageMaker Debugger's format")
    parser.add_argument("--out", required=True, help="profiler output directory (system/incremental/... inside)")
    parser.add_argument("--interval-ms", type=int, default=500)
    parser.add_argument("--node-id", default="algo-1")
    parser.add_argument("--pid", type=int, default=0, help="stop when this process exits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with SystemMetricsSampler(args.out, args.interval_ms, args.node_id):
        while not stop.wait(0.2):
            if args.pid and not _alive(args.pid):
                log.info("process %d exited: stopping", args.pid)
                break
    return 0


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
