"""The ProfilerReport's rules, with SageMaker's parameters and semantics, over SageMaker-format system metrics
and the step timeline.

As in SageMaker, each rule walks the data in `scan_interval_us` windows and re-checks its condition after
every window on everything seen so far; `RuleTriggered` counts the windows in which it held. Rules about GPU
under-use report "not applicable" on a host without GPU metrics: they ask whether a GPU is starved, and
SageMaker never fires them on CPU instances either. Each report is SageMaker's shape: {"RuleTriggered",
"Violations", "Details", "Datapoints", "RuleParameters"}; `Details["summary"]` is a sentence for people.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inventory_pipeline.rules.step_timeline import StepTimeline
from inventory_pipeline.rules.system_metrics_reader import (
    CPU,
    GPU,
    GPU_MEMORY,
    IO_WAIT,
    MEMORY_NAME,
    NETWORK_DIMENSION,
    SystemEvent,
    SystemMetrics,
)

SNAPSHOT_WINDOW_S = 0.02  # SageMaker: events less than 20 ms apart belong to one sample of all metrics
STEP_OUTLIER_MIN_STEPS = 100  # SageMaker's StepOutlier judges a phase once it has more than 100 steps


@dataclass
class ProfilerData:
    metrics: SystemMetrics
    timeline: StepTimeline
    job_start: float | None = None  # when the job started training, else the first sample

    @property
    def first_timestamp(self) -> float | None:
        stamps = [self.metrics.events[0].timestamp] if self.metrics.events else []
        stamps += [self.timeline.steps[0].start] if self.timeline.steps else []
        return min(stamps) if stamps else None

    @property
    def last_timestamp(self) -> float | None:
        stamps = [self.metrics.events[-1].timestamp] if self.metrics.events else []
        stamps += [self.timeline.steps[-1].start] if self.timeline.steps else []
        return max(stamps) if stamps else None


def report(
    parameters: dict[str, Any],
    summary: str,
    triggered: int = 0,
    violations: int = 0,
    datapoints: int = 0,
    **details: Any,
) -> dict[str, Any]:
    shown = {k: v for k, v in parameters.items() if k != "scan_interval_us"}
    return {
        "RuleTriggered": int(triggered),
        "Violations": int(violations),
        "Details": {"summary": summary, **details},
        "Datapoints": int(datapoints),
        "RuleParameters": "\n".join(f"{k}:{v}" for k, v in shown.items()),
    }


def not_applicable(parameters: dict[str, Any], why: str) -> dict[str, Any]:
    return report(parameters, f"not applicable: {why}", applicable=False)


def not_evaluated(parameters: dict[str, Any], why: str, datapoints: int = 0) -> dict[str, Any]:
    return report(parameters, f"not evaluated: {why}", datapoints=datapoints, evaluated=False)


def judged(enough_data: bool) -> dict[str, Any]:
    """Details flag for a rule that ran but saw too little to judge: it must not read as a pass."""
    return {} if enough_data else {"evaluated": False}


def windows(times: Sequence[float], start: float, interval_s: float) -> Iterator[tuple[int, int]]:
    """(begin, end) index ranges into sorted `times` for consecutive windows of `interval_s` from `start`."""
    begin, edge = 0, start + interval_s
    while begin < len(times):
        end = bisect.bisect_left(times, edge, lo=begin)
        yield begin, end
        begin, edge = end, edge + interval_s


def quantiles(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    points = {"max": 1.0, "p99": 0.99, "p95": 0.95, "p50": 0.5, "min": 0.0}
    return {k: round(float(np.quantile(array, q)), 2) for k, q in points.items()}


class ProfilerRule:
    name = ""
    needs_gpu = False

    def __init__(self, **parameters: Any):
        self.parameters = parameters
        self.interval_s = float(parameters.get("scan_interval_us", 60_000_000)) / 1e6

    def evaluate(self, data: ProfilerData) -> dict[str, Any]:
        if self.needs_gpu and not data.metrics.has_gpu:
            return not_applicable(self.parameters, "no GPU metrics on this host (a CPU instance)")
        return self.run(data)

    def run(self, data: ProfilerData) -> dict[str, Any]:
        raise NotImplementedError

    def event_windows(self, data: ProfilerData) -> Iterator[list[SystemEvent]]:
        events = data.metrics.events
        if not events:
            return
        times = [e.timestamp for e in events]
        for begin, end in windows(times, times[0], self.interval_s):
            yield events[begin:end]


class GpuStarvation(ProfilerRule):
    """A sample is a bottleneck when some GPU is below `gpu_threshold` while some core is above the limit;
    triggers once more than `patience` samples were seen and bottlenecks exceed `threshold` percent of
    them."""

    needs_gpu = True
    dimension = ""
    limit_parameter = ""
    what = ""

    def run(self, data: ProfilerData) -> dict[str, Any]:
        p = self.parameters
        limit = p[self.limit_parameter]
        snapshot, datapoints, triggered = -math.inf, 0, 0
        low_gpu: set[float] = set()
        busy: set[float] = set()
        for batch in self.event_windows(data):
            for event in batch:
                if abs(event.timestamp - snapshot) > SNAPSHOT_WINDOW_S:
                    snapshot, datapoints = event.timestamp, datapoints + 1
                if event.dimension == GPU and event.value < p["gpu_threshold"]:
                    low_gpu.add(snapshot)
                elif event.dimension == self.dimension and event.value > limit:
                    busy.add(snapshot)
            bottlenecks = len(low_gpu & busy)
            if datapoints > p["patience"] and 100.0 * bottlenecks / datapoints > p["threshold"]:
                triggered += 1
        bottlenecks = len(low_gpu & busy)
        share = 100.0 * bottlenecks / datapoints if datapoints else 0.0
        if datapoints <= p["patience"]:
            summary = (
                f"{datapoints} samples, not more than patience={p['patience']}: not judged yet "
                f"({bottlenecks} bottleneck samples so far)"
            )
        else:
            summary = (
                f"{self.what} above {limit}% while a GPU was below {p['gpu_threshold']}% in {bottlenecks} "
                f"of {datapoints} samples ({share:.1f}%, threshold {p['threshold']}%)"
            )
        return report(
            p,
            summary,
            triggered,
            bottlenecks,
            datapoints,
            low_gpu_utilization=len(low_gpu),
            bottleneck_percent=round(share, 2),
            **judged(datapoints > p["patience"] or triggered > 0),
        )


class CPUBottleneck(GpuStarvation):
    name, dimension, limit_parameter, what = "CPUBottleneck", CPU, "cpu_threshold", "a CPU core"


class IOBottleneck(GpuStarvation):
    name, dimension, limit_parameter, what = "IOBottleneck", IO_WAIT, "io_threshold", "I/O wait on a core"


def _per_gpu(events: list[SystemEvent], dimension: str, into: dict[tuple[str, str], list[float]]) -> None:
    for event in events:
        if event.dimension == dimension:
            into[(event.node, event.name)].append(event.value)


class LowGPUUtilization(ProfilerRule):
    """Per GPU, once more than `patience` samples: p95 of the last `window` below `threshold_p95`
    (under-used), or p95 above it with p5 below `threshold_p5` (fluctuating)."""

    name, needs_gpu = "LowGPUUtilization", True

    def run(self, data: ProfilerData) -> dict[str, Any]:
        p = self.parameters
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        triggered, findings = 0, {}
        for batch in self.event_windows(data):
            _per_gpu(batch, GPU, values)
            for (node, gpu), series in values.items():
                if len(series) <= p["patience"]:
                    continue
                recent = series[-p["window"] :]
                p95, p5 = float(np.quantile(recent, 0.95)), float(np.quantile(recent, 0.05))
                if p95 < p["threshold_p95"]:
                    findings[f"{node}/{gpu}"] = f"p95 {p95:.1f}% < {p['threshold_p95']}% (under-used)"
                elif p5 < p["threshold_p5"]:
                    findings[f"{node}/{gpu}"] = f"p95 {p95:.1f}% but p5 {p5:.1f}% < {p['threshold_p5']}% (fluctuating)"
                else:
                    continue
                triggered += 1
        datapoints = max((len(s) for s in values.values()), default=0)
        stats = {f"{node}/{gpu}": quantiles(s) for (node, gpu), s in values.items()}
        if findings:
            summary = "; ".join(f"{k}: {v}" for k, v in findings.items())
        elif datapoints <= p["patience"]:
            summary = f"{datapoints} samples per GPU, not more than patience={p['patience']}: not judged yet"
        else:
            summary = f"{len(values)} GPU(s) well used (p95 >= {p['threshold_p95']}%, p5 >= {p['threshold_p5']}%)"
        judged_now = bool(findings) or datapoints > p["patience"]
        return report(p, summary, triggered, triggered, datapoints, gpus=stats, **judged(judged_now))


class GPUMemoryIncrease(ProfilerRule):
    """Per GPU: the moving average of the last `window` memory samples exceeds the previous one by more than
    `increase` percentage points, once more than `patience` samples were seen."""

    name, needs_gpu = "GPUMemoryIncrease", True

    def run(self, data: ProfilerData) -> dict[str, Any]:
        p = self.parameters
        window = p["window"]
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        violations, largest = 0, {}
        for event in data.metrics.events:
            if event.dimension != GPU_MEMORY:
                continue
            series = values[(event.node, event.name)]
            series.append(event.value)
            if len(series) > window + 1:
                increase = float(np.mean(series[-window:]) - np.mean(series[-window - 1 : -1]))
                key = f"{event.node}/{event.name}"
                largest[key] = max(increase, largest.get(key, -math.inf))
                if increase > p["increase"] and len(series) > p["patience"]:
                    violations += 1
        datapoints = max((len(s) for s in values.values()), default=0)
        if violations:
            summary = f"GPU memory rose by more than {p['increase']} points between moving averages {violations} times"
        elif not values:
            return not_evaluated(p, "GPU utilisation is measured but GPU memory is not")
        else:
            summary = (
                f"largest rise between moving averages of {window} samples: "
                f"{max(largest.values(), default=0.0):.2f} points (threshold {p['increase']})"
            )
        return report(
            p,
            summary,
            int(violations > 0),
            violations,
            datapoints,
            largest_increase={k: round(v, 2) for k, v in largest.items()},
        )


class BatchSize(ProfilerRule):
    """Per node, once more than `window` and `patience` samples: p95 of CPU (mean over cores), of a GPU and
    of its memory all below their thresholds over the last `window` samples: the batch could be larger,
    or the instance smaller."""

    name, needs_gpu = "BatchSize", True

    def run(self, data: ProfilerData) -> dict[str, Any]:
        p = self.parameters
        window = p["window"]
        cores: dict[str, set[str]] = defaultdict(set)
        cpu_total: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        gpu: dict[tuple[str, str], list[float]] = defaultdict(list)
        memory: dict[tuple[str, str], list[float]] = defaultdict(list)
        triggered, findings = 0, {}
        for batch in self.event_windows(data):
            for event in batch:
                if event.dimension == CPU:
                    cores[event.node].add(event.name)
                    cpu_total[event.node][event.timestamp] += event.value
            _per_gpu(batch, GPU, gpu)
            _per_gpu(batch, GPU_MEMORY, memory)
            for node, totals in cpu_total.items():
                cpu = [v / len(cores[node]) for v in totals.values()]
                if len(cpu) <= window or len(cpu) <= p["patience"]:
                    continue
                cpu_p95 = float(np.quantile(cpu[-window:], 0.95))
                if cpu_p95 >= p["cpu_threshold_p95"]:
                    continue
                for (gpu_node, name), series in gpu.items():
                    mem = memory.get((gpu_node, name), [])
                    if gpu_node != node or len(series) <= window or not mem:
                        continue
                    gpu_p95, mem_p95 = (
                        float(np.quantile(series[-window:], 0.95)),
                        float(np.quantile(mem[-window:], 0.95)),
                    )
                    if gpu_p95 < p["gpu_threshold_p95"] and mem_p95 < p["gpu_memory_threshold_p95"]:
                        triggered += 1
                        findings[f"{node}/{name}"] = (
                            f"CPU p95 {cpu_p95:.1f}%, GPU p95 {gpu_p95:.1f}%, GPU memory p95 {mem_p95:.1f}%"
                        )
        datapoints = max((len(t) for t in cpu_total.values()), default=0)
        if findings:
            summary = "under-used, the batch could be larger: " + "; ".join(f"{k}: {v}" for k, v in findings.items())
        elif datapoints <= max(window, p["patience"]):
            summary = (
                f"{datapoints} samples, not more than window={window} and patience={p['patience']}: not judged yet"
            )
        else:
            summary = "CPU, GPU or GPU memory is used enough for the batch size"
        judged_now = bool(findings) or datapoints > max(window, p["patience"])
        return report(p, summary, triggered, triggered, datapoints, **judged(judged_now))


def _histogram(values: list[float]) -> np.ndarray:
    # 2-point bins over 0-100 inclusive (SageMaker's bins stop at 98 and so miss a fully busy GPU)
    counts, _ = np.histogram(values, bins=np.arange(0, 102, 2))
    return counts.astype(float)


def jensen_shannon_distance(first: np.ndarray, second: np.ndarray) -> float:
    p, q = first / first.sum(), second / second.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    return math.sqrt(max((kl(p, m) + kl(q, m)) / 2, 0.0))


class LoadBalancing(ProfilerRule):
    """Per node with several GPUs, once more than `patience` samples: the Jensen-Shannon distance between two
    GPUs' utilisation histograms above `threshold` means the work is unevenly spread."""

    name, needs_gpu = "LoadBalancing", True

    def run(self, data: ProfilerData) -> dict[str, Any]:
        p = self.parameters
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        triggered, distances = 0, {}
        for batch in self.event_windows(data):
            _per_gpu(batch, GPU, values)
            by_node: dict[str, list[str]] = defaultdict(list)
            for node, gpu in sorted(values):
                by_node[node].append(gpu)
            for node, gpus in by_node.items():
                for i, first in enumerate(gpus):
                    for second in gpus[i + 1 :]:
                        a, b = values[(node, first)], values[(node, second)]
                        if len(a) <= p["patience"] or len(b) <= p["patience"]:
                            continue
                        distance = jensen_shannon_distance(_histogram(a), _histogram(b))
                        distances[f"{node}/{first}-{second}"] = round(distance, 3)
                        triggered += int(distance > p["threshold"])
        gpus_per_node = defaultdict(int)
        for node, _ in values:
            gpus_per_node[node] += 1
        if max(gpus_per_node.values(), default=0) < 2:
            return not_applicable(p, "needs at least two GPUs on a node")
        datapoints = max((len(s) for s in values.values()), default=0)
        if not distances:
            summary = f"{datapoints} samples per GPU, not more than patience={p['patience']}: not judged yet"
        else:
            worst = max(distances, key=distances.get)
            summary = f"largest workload distance {distances[worst]} ({worst}), threshold {p['threshold']}"
        return report(p, summary, triggered, triggered, datapoints, distances=distances, **judged(bool(distances)))


class Dataloader(ProfilerRule):
    """Compares the number of parallel dataloader processes with the cores; needs the dataloader events of
    SageMaker's framework profiler, which this pipeline does not collect."""

    name = "Dataloader"

    def run(self, data: ProfilerData) -> dict[str, Any]:
        cores = len({(e.node, e.name) for e in data.metrics.events if e.dimension == CPU})
        return not_evaluated(
            self.parameters,
            "needs the dataloader timeline of SageMaker's framework profiler "
            f"(deprecated), which this pipeline does not collect; {cores} CPU core(s) measured",
        )


class MaxInitializationTime(ProfilerRule):
    """Triggers when the first training step came (or still had not come) more than `threshold` minutes after
    the job started."""

    name = "MaxInitializationTime"

    def run(self, data: ProfilerData) -> dict[str, Any]:
        p = self.parameters
        limit_s = p["threshold"] * 60.0
        start = data.job_start if data.job_start is not None else data.first_timestamp
        timeline = data.timeline
        if start is None:
            return not_evaluated(p, "no system metrics and no steps: the job's start is unknown")
        if timeline.steps:
            first = timeline.steps[0].start
            waited = first - start
            summary = f"first step {waited / 60:.2f} min after the job started (threshold {p['threshold']} min)"
            return report(
                p,
                summary,
                int(waited > limit_s),
                int(waited > limit_s),
                len(timeline.steps),
                job_start=start,
                first_step=first,
                initialization_s=round(waited, 2),
            )
        if not timeline.trial_found:
            return not_evaluated(p, "no step timings: the job saved no smdebug trial to time its steps")
        waited = (data.last_timestamp or start) - start
        summary = f"no training step {waited / 60:.2f} min after the job started (threshold {p['threshold']} min)"
        return report(p, summary, int(waited > limit_s), int(waited > limit_s), 0, job_start=start)


class StepOutlier(ProfilerRule):
    """Per node and phase, once more than 100 step durations: steps longer than mean + `stddev` standard
    deviations are outliers; more than `n_outliers` of them trigger."""

    name = "StepOutlier"

    def run(self, data: ProfilerData) -> dict[str, Any]:
        p = self.parameters
        phases = data.timeline.durations(p.get("mode") or None)
        if not data.timeline.trial_found:
            return not_evaluated(p, "no step timings: the job saved no smdebug trial to time its steps")
        flat = sorted((start, key, step, seconds) for key, items in phases.items() for step, start, seconds in items)
        seen: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        triggered, worst, details = 0, 0, {}
        starts = [item[0] for item in flat]
        for begin, end in windows(starts, starts[0], self.interval_s) if starts else []:
            for _, key, step, seconds in flat[begin:end]:
                seen[key].append((step, seconds))
            for (node, mode), items in seen.items():
                if len(items) <= STEP_OUTLIER_MIN_STEPS:
                    continue
                durations = np.array([s for _, s in items])
                limit = float(durations.mean() + p["stddev"] * durations.std())
                outliers = [step for step, s in items if s > limit]
                details[f"{node}/{mode}"] = {
                    "mean_s": round(float(durations.mean()), 4),
                    "stddev_s": round(float(durations.std()), 4),
                    "limit_s": round(limit, 4),
                    "number_of_outliers": len(outliers),
                    "outlier_steps": outliers[:50],
                    "steps": len(items),
                }
                if len(outliers) > p["n_outliers"]:
                    triggered, worst = triggered + 1, max(worst, len(outliers))
        counted = {f"{node}/{mode}": len(items) for (node, mode), items in seen.items()}
        if not details:
            summary = (
                f"too few steps to judge: a phase needs more than {STEP_OUTLIER_MIN_STEPS} timed steps, "
                f"have {counted or 'none'}"
            )
            return report(p, summary, 0, 0, len(flat), step_details=details, evaluated=False)
        summary = "; ".join(
            f"{k}: {v['number_of_outliers']} step(s) over {v['limit_s']} s in {v['steps']} "
            f"(n_outliers {p['n_outliers']})"
            for k, v in details.items()
        )
        return report(p, summary, triggered, worst, len(flat), step_details=details)


class OverallSystemUsage(ProfilerRule):
    """Per node percentiles of CPU, GPU, memory, network and I/O wait; never triggers (as in SageMaker)."""

    name = "OverallSystemUsage"

    def run(self, data: ProfilerData) -> dict[str, Any]:
        sums: dict[str, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
        units: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for event in data.metrics.events:
            metric = {
                CPU: "CPU",
                GPU: "GPU",
                GPU_MEMORY: "GPU memory",
                IO_WAIT: "I/O",
                NETWORK_DIMENSION: "Network",
            }.get(event.dimension)
            if event.name == MEMORY_NAME:
                metric = "CPU memory"
            if metric is None:
                continue
            sums[metric][event.node][event.timestamp] += event.value
            units[metric][event.node].add(event.name)
        usage: dict[str, dict[str, dict[str, float]]] = {}
        for metric, nodes in sums.items():
            for node, series in nodes.items():
                # CPU, GPU, their memory and I/O wait are averaged over cores/GPUs; network bytes are summed
                divisor = len(units[metric][node]) if metric in ("CPU", "GPU", "GPU memory", "I/O") else 1
                usage.setdefault(metric, {})[node] = quantiles([v / divisor for v in series.values()])
        datapoints = max((len(s) for s in sums.get("CPU", {}).values()), default=0)
        if not usage:
            return not_evaluated(self.parameters, "no system metrics")
        cpu = usage.get("CPU", {})
        summary = "; ".join(f"{node}: CPU p50 {v['p50']}% p95 {v['p95']}%" for node, v in cpu.items()) or "no CPU data"
        return report(self.parameters, summary, 0, 0, datapoints, **usage)


RULES: dict[str, type[ProfilerRule]] = {
    rule.name: rule
    for rule in (
        BatchSize,
        CPUBottleneck,
        Dataloader,
        GPUMemoryIncrease,
        IOBottleneck,
        LoadBalancing,
        LowGPUUtilization,
        MaxInitializationTime,
        OverallSystemUsage,
        StepOutlier,
    )
}
