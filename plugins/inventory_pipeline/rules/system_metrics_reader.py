"""SageMaker's system-metrics files, read the way smdebug's SystemMetricsReader reads them.

Layout: `<profiler-output>/system/incremental/<YYYYMMDDHH>/<epoch seconds>.algo-<n>.json`, JSON lines
{"Type", "Name", "Dimension", "Value", "NodeId", "Timestamp" (epoch seconds)}. Dimensions the profiler rules
use: CPUUtilization and I/OWaitPercentage (per core, Type "cpu"), GPUUtilization and GPUMemoryUtilization
(per GPU, Type "gpu"), Name MemoryUsedPercent (Type "memory"), network throughput with Dimension "Algorithm".
Lines or files that do not fit are counted and reported, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from inventory_pipeline.rules.storage import Storage

log = logging.getLogger(__name__)
# smdebug's own pattern for a system-metrics file (smdebug.profiler.utils.validate_system_profiler_file)
FILE_PATTERN = re.compile(r"(^|.*/)system/.+/(\d{10})\.algo-\d+\.json$")
CPU, IO_WAIT, GPU, GPU_MEMORY = (
    "CPUUtilization",
    "I/OWaitPercentage",
    "GPUUtilization",
    "GPUMemoryUtilization",
)
MEMORY_NAME, NETWORK_DIMENSION = "MemoryUsedPercent", "Algorithm"
MAX_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class SystemEvent:
    timestamp: float
    node: str
    type: str
    name: str
    dimension: str
    value: float


@dataclass
class SystemMetrics:
    events: list[SystemEvent] = field(default_factory=list)  # sorted by timestamp
    files: int = 0
    skipped_lines: int = 0
    ignored_files: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def has_gpu(self) -> bool:
        return any(e.dimension == GPU for e in self.events)

    def skip_note(self) -> str:
        parts = []
        if self.skipped_lines:
            parts.append(f"{self.skipped_lines} malformed line(s) skipped (e.g. {'; '.join(self.examples)})")
        if self.ignored_files:
            parts.append(
                f"{len(self.ignored_files)} file(s) not named like system metrics ignored "
                f"(e.g. {', '.join(self.ignored_files[:MAX_EXAMPLES])})"
            )
        return "; ".join(parts)


def parse_event(record: Any) -> SystemEvent:
    """One record; ValueError says what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("Type", "Dimension", "Value", "NodeId", "Timestamp") if k not in record]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    value, timestamp = record["Value"], record["Timestamp"]
    if not isinstance(value, Real) or isinstance(value, bool) or not isinstance(timestamp, Real):
        raise ValueError("Value and Timestamp must be numbers")
    return SystemEvent(
        float(timestamp),
        str(record["NodeId"]),
        str(record["Type"]),
        str(record.get("Name") or ""),
        str(record["Dimension"] or ""),
        float(value),
    )


def read_system_metrics(storage: Storage) -> SystemMetrics:
    """Every record under `system/` of a profiler output (local or S3)."""
    result = SystemMetrics()
    for obj in storage.list("system"):
        if not FILE_PATTERN.match(obj.key):
            result.ignored_files.append(obj.key)
            continue
        result.files += 1
        text = storage.read(obj.key).decode("utf-8", errors="replace")
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                result.events.append(parse_event(json.loads(line)))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                unfinished = number == len(lines) and not text.endswith("\n")
                result.skipped_lines += 1
                if len(result.examples) < MAX_EXAMPLES:
                    why = "incomplete last line (still being written?)" if unfinished else str(exc)
                    result.examples.append(f"{obj.key}:{number}: {why}")
    result.events.sort(key=lambda e: e.timestamp)
    if result.skipped_lines or result.ignored_files:
        log.warning("system metrics under %s: %s", storage.uri, result.skip_note())
    return result
