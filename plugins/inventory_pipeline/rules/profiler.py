"""The ProfilerReport: SageMaker's profiler rules over SageMaker-format system metrics.

Each rule returns SageMaker's report shape {"RuleTriggered", "Violations", "Details", "Datapoints",
"RuleParameters"} and is written to `profiler-output/profiler-reports/<Rule>.json`, with a
`profiler-report.html` beside them. Thresholds are SageMaker's defaults. Rules about GPUs report "not
applicable" on a host without GPU metrics instead of triggering; rules that need step timings take them
from the debugger trial's per-step index files.
"""

from __future__ import annotations

import html
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from inventory_pipeline.rules.outcome import ERROR, ISSUES_FOUND, NO_ISSUES_FOUND, RuleOutcome

DEFAULTS: dict[str, dict[str, float]] = {
    "CPUBottleneck": {"threshold": 50, "gpu_threshold": 10, "cpu_threshold": 90, "patience": 1000},
    "IOBottleneck": {"threshold": 50, "gpu_threshold": 10, "io_threshold": 50, "patience": 1000},
    "LowGPUUtilization": {"threshold_p95": 70, "threshold_p5": 10, "window": 500, "patience": 1000},
    "GPUMemoryIncrease": {"increase": 5, "patience": 1000, "window": 10},
    "BatchSize": {"cpu_threshold_p95": 70, "gpu_threshold_p95": 70, "gpu_memory_threshold_p95": 70},
    "Dataloader": {"min_threshold": 70, "max_threshold": 200},
    "LoadBalancing": {"threshold": 0.5, "patience": 1000},
    "MaxInitializationTime": {"threshold": 20},
    "StepOutlier": {"stddev": 3, "n_outliers": 10},
    "OverallSystemUsage": {},
}
GPU_RULES = ("LowGPUUtilization", "GPUMemoryIncrease", "BatchSize", "LoadBalancing")


def read_system_metrics(root: Path) -> list[dict[str, Any]]:
    """All records under `<root>/system/incremental/**` (the sampler's and SageMaker's file layout)."""
    records = []
    for path in sorted((Path(root) / "system").rglob("*.json")):
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def _by_timestamp(records: list[dict[str, Any]], dimension: str) -> dict[float, float]:
    """Mean value of a dimension per (node, timestamp) sample."""
    grouped: dict[tuple[str, float], list[float]] = defaultdict(list)
    for record in records:
        if record["Dimension"] == dimension:
            grouped[(record["NodeId"], record["Timestamp"])].append(float(record["Value"]))
    return {key[1]: statistics.fmean(values) for key, values in sorted(grouped.items())}


def _report(triggered: bool, violations: int, datapoints: int, details: dict, params: dict) -> dict[str, Any]:
    return {"RuleTriggered": int(triggered), "Violations": violations, "Details": details,
            "Datapoints": datapoints, "RuleParameters": "\n".join(f"{k}:{v}" for k, v in params.items())}  # fmt: skip


def _share_rule(series: dict[float, float], limit: float, share: float, params: dict, what: str) -> dict:
    over = [t for t, v in series.items() if v > limit]
    percent = 100.0 * len(over) / len(series) if series else 0.0
    details = {"summary": f"{what} above {limit:g}% in {percent:.1f}% of {len(series)} datapoints "
                          f"(rule threshold {share:g}%)", "share_percent": round(percent, 2)}  # fmt: skip
    return _report(bool(series) and percent > share, len(over), len(series), details, params)


def step_times(trial_path: str | None) -> list[float]:
    """Completion time of every saved step: the mtimes of smdebug's per-step index files."""
    if not trial_path or not Path(trial_path, "index").is_dir():
        return []
    times: dict[str, float] = {}
    for path in Path(trial_path, "index").rglob("*.json"):
        step = path.name.split("_")[0]
        times[step] = max(times.get(step, 0.0), path.stat().st_mtime)
    return [times[k] for k in sorted(times)]


def evaluate_rules(records: list[dict[str, Any]], steps: list[float], training_start: float | None) -> dict:
    has_gpu = any(r["Type"] == "gpu" for r in records)
    cpu = _by_timestamp(records, "CPUUtilization")
    reports: dict[str, dict[str, Any]] = {}
    for name in GPU_RULES:
        if not has_gpu:
            reports[name] = _report(False, 0, 0, {"summary": "not applicable: no GPU metrics on this host"},
                                    DEFAULTS[name])  # fmt: skip
    if has_gpu:
        gpu = _by_timestamp(records, "GPUUtilization")
        low = [v for v in gpu.values() if v < DEFAULTS["LowGPUUtilization"]["threshold_p95"]]
        reports["LowGPUUtilization"] = _report(
            len(low) > 0.95 * len(gpu), len(low), len(gpu), {"summary": f"{len(low)} low-utilisation datapoints"},
            DEFAULTS["LowGPUUtilization"],
        )  # fmt: skip
        for name in ("GPUMemoryIncrease", "BatchSize", "LoadBalancing"):
            reports[name] = _report(False, 0, len(gpu), {"summary": "evaluated on GPU utilisation only"},
                                    DEFAULTS[name])  # fmt: skip
    gpu_idle = not has_gpu  # a CPU-only host: the "GPU below gpu_threshold" half of the condition always holds
    params = DEFAULTS["CPUBottleneck"]
    reports["CPUBottleneck"] = _share_rule(cpu if gpu_idle else {}, params["cpu_threshold"], params["threshold"],
                                           params, "CPU utilisation")  # fmt: skip
    params = DEFAULTS["IOBottleneck"]
    reports["IOBottleneck"] = _share_rule(_by_timestamp(records, "CPUIOWait"), params["io_threshold"],
                                          params["threshold"], params, "I/O wait")  # fmt: skip
    reports["Dataloader"] = _report(
        False,
        0,
        0,
        {"summary": "not evaluated: needs framework (dataloader) metrics, which this profiler does not collect"},
        DEFAULTS["Dataloader"],
    )
    init_minutes = (steps[0] - training_start) / 60 if steps and training_start else None
    limit = DEFAULTS["MaxInitializationTime"]["threshold"]
    reports["MaxInitializationTime"] = _report(
        init_minutes is not None and init_minutes > limit, int(bool(init_minutes and init_minutes > limit)),
        len(steps), {"summary": "no step timings" if init_minutes is None else
                     f"first step after {init_minutes:.2f} min (threshold {limit} min)"},
        DEFAULTS["MaxInitializationTime"],
    )  # fmt: skip
    durations = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    outliers = []
    if len(durations) >= 3:
        mean, sd = statistics.fmean(durations), statistics.pstdev(durations)
        outliers = [d for d in durations if sd and d > mean + DEFAULTS["StepOutlier"]["stddev"] * sd]
    reports["StepOutlier"] = _report(
        len(outliers) > DEFAULTS["StepOutlier"]["n_outliers"], len(outliers), len(durations),
        {"summary": f"{len(outliers)} step(s) slower than mean + 3 sd over {len(durations)} steps"},
        DEFAULTS["StepOutlier"],
    )  # fmt: skip
    memory = _by_timestamp(records, "Memory")
    usage = {}
    for label, series in (("cpu", cpu), ("memory", memory)):
        values = sorted(series.values())
        if values:
            usage[label] = {"p50": values[len(values) // 2], "p95": values[int(0.95 * (len(values) - 1))],
                            "max": values[-1]}  # fmt: skip
    reports["OverallSystemUsage"] = _report(False, 0, len(cpu), {"summary": "system usage statistics",
                                                                  "usage": usage}, {})  # fmt: skip
    return reports


def render_html(job_name: str, reports: dict[str, dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{'TRIGGERED' if r['RuleTriggered'] else 'ok'}</td>"
        f"<td>{r['Violations']}</td><td>{r['Datapoints']}</td><td>{html.escape(str(r['Details'].get('summary')))}"
        "</td></tr>"
        for name, r in sorted(reports.items())
    )
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Profiler report {html.escape(job_name)}"
            "</title></head><body><h1>Profiler report</h1><table border='1'><tr><th>Rule</th><th>Status</th>"
            f"<th>Violations</th><th>Datapoints</th><th>Details</th></tr>{rows}</table></body></html>")  # fmt: skip


def evaluate_profiler_report(
    rule_configuration: dict[str, Any],
    profiler_path: str | Path,
    output_dir: Path,
    trial_path: str | None = None,
    training_start: float | None = None,
    job_name: str = "",
) -> RuleOutcome:
    """Run the ProfilerReport's rules; write the report files under `<output_dir>/profiler-output/`."""
    name = rule_configuration.get("RuleConfigurationName", "ProfilerReport")
    try:
        records = read_system_metrics(Path(profiler_path))
        if not records:
            return RuleOutcome(name, ERROR, f"no system metrics under {profiler_path}: the profiler wrote nothing")
        reports = evaluate_rules(records, step_times(trial_path), training_start)
        out = Path(output_dir) / "profiler-output"
        (out / "profiler-reports").mkdir(parents=True, exist_ok=True)
        for rule, report in reports.items():
            (out / "profiler-reports" / f"{rule}.json").write_text(json.dumps(report, indent=2))
        (out / "profiler-report.html").write_text(render_html(job_name, reports))
    except Exception as exc:
        return RuleOutcome(name, ERROR, f"ProfilerReport failed: {type(exc).__name__}: {exc}")
    triggered = sorted(rule for rule, report in reports.items() if report["RuleTriggered"])
    status = ISSUES_FOUND if triggered else NO_ISSUES_FOUND
    details = f"triggered: {', '.join(triggered)}" if triggered else f"{len(reports)} profiler rules, none triggered"
    return RuleOutcome(name, status, details, len(triggered), len(records), {"rule_to_invoke": "ProfilerReport"})
