"""The ProfilerReport's rules on hand-built SageMaker-format metric files (GPU conditions cannot be produced
on this CPU-only machine) and hand-built step timelines: each rule triggers on its condition, stays quiet
without it, and says "not applicable" / "not evaluated" instead of guessing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inventory_pipeline.rules.profiler import evaluate_profiler_report, profiler_defaults
from inventory_pipeline.rules.profiler_rules import RULES, ProfilerData
from inventory_pipeline.rules.step_timeline import StepTimeline, StepTiming
from inventory_pipeline.rules.system_metrics_reader import SystemMetrics, parse_event

START = 1_790_000_040.0  # a whole minute, as SageMaker names its files
GPU_RULES = (
    "LowGPUUtilization",
    "GPUMemoryIncrease",
    "BatchSize",
    "LoadBalancing",
    "CPUBottleneck",
    "IOBottleneck",
)


def samples(count: int, interval: float = 0.5, node: str = "algo-1", **series) -> list[dict]:
    """SageMaker records for `count` samples. Each keyword is a metric: cpu=[per-core values or callables of
    the sample index], iowait=[...], gpu=[...], gpu_memory=[...], memory=value."""
    names = {
        "cpu": ("cpu", "cpu{}", "CPUUtilization"),
        "iowait": ("cpu", "cpu{}", "I/OWaitPercentage"),
        "gpu": ("gpu", "gpu{}", "GPUUtilization"),
        "gpu_memory": ("gpu", "gpu{}", "GPUMemoryUtilization"),
    }
    records = []
    for i in range(count):
        stamp = START + i * interval
        for key, values in series.items():
            if key == "memory":
                records.append(
                    {
                        "Type": "memory",
                        "Name": "MemoryUsedPercent",
                        "Dimension": "",
                        "Value": values,
                        "NodeId": node,
                        "Timestamp": stamp,
                    }
                )
                continue
            kind, name, dimension = names[key]
            for unit, value in enumerate(values):
                value = value(i) if callable(value) else value
                records.append(
                    {
                        "Type": kind,
                        "Name": name.format(unit),
                        "Dimension": dimension,
                        "Value": value,
                        "NodeId": node,
                        "Timestamp": stamp,
                    }
                )
    return records


def write_metrics(root: Path, records: list[dict]) -> Path:
    """Files per minute and node, in SageMaker's layout."""
    files: dict[Path, list[str]] = {}
    for record in records:
        minute = int(record["Timestamp"]) // 60 * 60
        path = root / "system" / "incremental" / "2026112500" / f"{minute}.{record['NodeId']}.json"
        files.setdefault(path, []).append(json.dumps(record))
    for path, lines in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return root


def report_config(**overrides) -> dict:
    return {
        "RuleConfigurationName": "ProfilerReport",
        "RuleEvaluatorImage": "x",
        "RuleParameters": {"rule_to_invoke": "ProfilerReport", **{k: str(v) for k, v in overrides.items()}},
    }


def run_report(tmp_path: Path, records: list[dict], **overrides):
    out = tmp_path / "out"
    outcome = evaluate_profiler_report(report_config(**overrides), write_metrics(tmp_path / "m", records), out)
    folder = out / "profiler-output" / "profiler-reports"
    reports = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")} if folder.is_dir() else {}
    return outcome, reports


def run_rule(
    name: str,
    metrics: list[dict] = (),
    timeline: StepTimeline | None = None,
    start: float | None = None,
    **overrides,
) -> dict:
    parameters = {**profiler_defaults()[name], **overrides}
    events = sorted((parse_event(r) for r in metrics), key=lambda e: e.timestamp)
    return RULES[name](**parameters).evaluate(ProfilerData(SystemMetrics(events), timeline or StepTimeline(), start))


def test_defaults_are_sagemakers():
    defaults = profiler_defaults()
    assert set(defaults) == set(RULES) and len(RULES) == 10
    assert defaults["CPUBottleneck"] == {
        "threshold": 50,
        "gpu_threshold": 10,
        "cpu_threshold": 90,
        "patience": 1000,
        "scan_interval_us": 60_000_000,
    }
    assert defaults["LowGPUUtilization"]["threshold_p95"] == 70 and defaults["StepOutlier"]["stddev"] == 3
    assert defaults["MaxInitializationTime"]["threshold"] == 20 and defaults["LoadBalancing"]["threshold"] == 0.5


def test_a_cpu_only_host_never_fires_a_gpu_rule_even_at_full_cpu(tmp_path):
    outcome, reports = run_report(tmp_path, samples(1200, cpu=[100.0, 100.0], iowait=[90.0, 90.0], memory=40.0))
    assert outcome.status == "NoIssuesFound", outcome.details
    for rule in GPU_RULES:
        assert reports[rule]["RuleTriggered"] == 0
        assert reports[rule]["Details"]["summary"].startswith("not applicable")
    assert "not applicable: BatchSize, CPUBottleneck" in outcome.details
    assert set(reports) == set(RULES)
    for report in reports.values():
        assert set(report) == {"RuleTriggered", "Violations", "Details", "Datapoints", "RuleParameters"}
    html = (tmp_path / "out" / "profiler-output" / "profiler-report.html").read_text()
    assert all(rule in html for rule in RULES) and "No profiler rule found an issue" in html


def test_cpu_bottleneck_fires_when_busy_cores_starve_the_gpu_and_only_then(tmp_path):
    starved = samples(1200, cpu=[97.0, 40.0], gpu=[2.0], gpu_memory=[30.0])
    outcome, reports = run_report(tmp_path / "a", starved)
    assert outcome.status == "IssuesFound" and "CPUBottleneck" in outcome.details
    report = reports["CPUBottleneck"]
    assert report["RuleTriggered"] >= 1 and report["Violations"] == 1200 and report["Datapoints"] == 1200
    assert "threshold:50\ngpu_threshold:10\ncpu_threshold:90\npatience:1000" == report["RuleParameters"]
    fed = run_rule("CPUBottleneck", samples(1200, cpu=[97.0, 97.0], gpu=[90.0]))
    assert fed["RuleTriggered"] == 0 and fed["Violations"] == 0
    idle_cpu = run_rule("CPUBottleneck", samples(1200, cpu=[30.0, 30.0], gpu=[2.0]))
    assert idle_cpu["RuleTriggered"] == 0
    # SageMaker's patience: 1000 samples are needed before judging
    early = run_rule("CPUBottleneck", samples(900, cpu=[97.0, 97.0], gpu=[2.0]))
    assert early["RuleTriggered"] == 0 and "not judged yet" in early["Details"]["summary"]
    # 40 % of the time is below the 50 % threshold
    partial = run_rule("CPUBottleneck", samples(1200, cpu=[lambda i: 97.0 if i % 5 < 2 else 20.0], gpu=[2.0]))
    assert partial["RuleTriggered"] == 0 and partial["Violations"] == 480


def test_io_bottleneck_fires_on_io_wait_while_the_gpu_waits():
    assert run_rule("IOBottleneck", samples(1200, iowait=[70.0], gpu=[3.0]))["RuleTriggered"] >= 1
    assert run_rule("IOBottleneck", samples(1200, iowait=[5.0], gpu=[3.0]))["RuleTriggered"] == 0


def test_low_gpu_utilization_finds_underuse_and_fluctuation():
    under = run_rule("LowGPUUtilization", samples(1100, gpu=[20.0]))
    assert under["RuleTriggered"] >= 1 and "under-used" in under["Details"]["summary"]
    swinging = run_rule("LowGPUUtilization", samples(1100, gpu=[lambda i: 100.0 if i % 2 else 0.0]))
    assert swinging["RuleTriggered"] >= 1 and "fluctuating" in swinging["Details"]["summary"]
    busy = run_rule("LowGPUUtilization", samples(1100, gpu=[lambda i: 80.0 + i % 10]))
    assert busy["RuleTriggered"] == 0 and "well used" in busy["Details"]["summary"]


def test_gpu_memory_increase_fires_on_a_jump_after_patience():
    jump = run_rule("GPUMemoryIncrease", samples(1100, gpu=[50.0], gpu_memory=[lambda i: 10.0 if i < 1050 else 90.0]))
    assert jump["RuleTriggered"] == 1 and jump["Violations"] > 0
    flat = run_rule("GPUMemoryIncrease", samples(1100, gpu=[50.0], gpu_memory=[lambda i: 40.0 + i % 3]))
    assert flat["RuleTriggered"] == 0


def test_batch_size_fires_when_cpu_gpu_and_gpu_memory_are_all_underused():
    small = run_rule("BatchSize", samples(1100, cpu=[20.0, 30.0], gpu=[20.0], gpu_memory=[15.0]))
    assert small["RuleTriggered"] >= 1 and "batch could be larger" in small["Details"]["summary"]
    busy_gpu = run_rule("BatchSize", samples(1100, cpu=[20.0, 30.0], gpu=[90.0], gpu_memory=[15.0]))
    assert busy_gpu["RuleTriggered"] == 0


def test_load_balancing_compares_gpus_of_a_node():
    uneven = run_rule("LoadBalancing", samples(1100, gpu=[90.0, 10.0]))
    assert uneven["RuleTriggered"] >= 1 and uneven["Details"]["distances"]["algo-1/gpu0-gpu1"] > 0.5
    even = run_rule("LoadBalancing", samples(1100, gpu=[lambda i: 88.0 + i % 4, lambda i: 89.0 + i % 4]))
    assert even["RuleTriggered"] == 0
    single = run_rule("LoadBalancing", samples(1100, gpu=[90.0]))
    assert single["Details"]["summary"].startswith("not applicable")


def timeline(durations: list[float], mode: str = "TRAIN", start: float = START) -> StepTimeline:
    steps, clock = [], start
    for step, seconds in enumerate([*durations, 0.1]):
        steps.append(StepTiming("worker_0", mode, step, step, clock))
        clock += seconds
    return StepTimeline(steps, trial_found=True, ended=True)


def test_step_outlier_needs_more_than_n_outliers_slow_steps_among_over_100():
    slow = run_rule("StepOutlier", timeline=timeline([0.1] * 150 + [1.0] * 12))
    assert slow["RuleTriggered"] == 1 and slow["Violations"] == 12
    assert slow["Details"]["step_details"]["worker_0/TRAIN"]["outlier_steps"] == list(range(150, 162))
    few = run_rule("StepOutlier", timeline=timeline([0.1] * 150 + [1.0] * 5))
    assert few["RuleTriggered"] == 0 and few["Details"]["step_details"]["worker_0/TRAIN"]["number_of_outliers"] == 5
    short = run_rule("StepOutlier", timeline=timeline([0.1] * 50 + [1.0] * 12))
    assert short["RuleTriggered"] == 0 and "too few steps" in short["Details"]["summary"]
    other_mode = run_rule("StepOutlier", timeline=timeline([0.1] * 150 + [1.0] * 12), mode="EVAL")
    assert other_mode["RuleTriggered"] == 0
    no_trial = run_rule("StepOutlier")
    assert no_trial["Details"]["summary"].startswith("not evaluated")


def test_max_initialization_time_measures_the_wait_for_the_first_step():
    late = run_rule("MaxInitializationTime", samples(2, cpu=[10.0]), timeline([0.1] * 3, start=START + 25 * 60))
    assert late["RuleTriggered"] == 1 and "25.00 min" in late["Details"]["summary"]
    prompt = run_rule("MaxInitializationTime", samples(2, cpu=[10.0]), timeline([0.1] * 3, start=START + 120))
    assert prompt["RuleTriggered"] == 0
    stuck = run_rule("MaxInitializationTime", samples(2, interval=30 * 60, cpu=[10.0]), StepTimeline(trial_found=True))
    assert stuck["RuleTriggered"] == 1 and "no training step" in stuck["Details"]["summary"]
    unknown = run_rule("MaxInitializationTime", samples(2, cpu=[10.0]))
    assert unknown["Details"]["summary"].startswith("not evaluated")
    given_start = run_rule(
        "MaxInitializationTime",
        samples(2, cpu=[10.0]),
        timeline([0.1], start=START + 120),
        start=START - 30 * 60,
    )
    assert given_start["RuleTriggered"] == 1


def test_overall_system_usage_summarises_per_node_and_never_triggers():
    records = samples(100, cpu=[20.0, 60.0], memory=30.0) + samples(100, node="algo-2", cpu=[90.0, 90.0], memory=50.0)
    report = run_rule("OverallSystemUsage", records)
    assert report["RuleTriggered"] == 0 and report["Datapoints"] == 100
    assert report["Details"]["CPU"]["algo-1"]["p50"] == 40.0 and report["Details"]["CPU"]["algo-2"]["max"] == 90.0
    assert report["Details"]["CPU memory"]["algo-2"]["p95"] == 50.0


def test_report_parameters_override_sagemakers_defaults(tmp_path):
    short = samples(20, cpu=[97.0, 97.0], gpu=[1.0])
    quiet, _ = run_report(tmp_path / "a", short)
    assert quiet.status == "NoIssuesFound"
    loud, reports = run_report(tmp_path / "b", short, CPUBottleneck_patience=5, cpubottleneck_threshold=20)
    assert loud.status == "IssuesFound" and reports["CPUBottleneck"]["RuleParameters"].startswith("threshold:20\n")
    assert loud.parameters["CPUBottleneck"]["patience"] == 5


def test_one_profiler_rule_can_run_on_its_own(tmp_path):
    config = {
        "RuleConfigurationName": "CPUBottleneck",
        "RuleParameters": {"rule_to_invoke": "CPUBottleneck", "patience": "5"},
    }
    outcome = evaluate_profiler_report(
        config, write_metrics(tmp_path / "m", samples(20, cpu=[97.0], gpu=[1.0])), tmp_path / "out"
    )
    assert outcome.status == "IssuesFound" and list(outcome.parameters) == ["CPUBottleneck"]
    assert [p.name for p in (tmp_path / "out" / "profiler-output" / "profiler-reports").iterdir()] == [
        "CPUBottleneck.json"
    ]


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"CPUBottleneck_cpu_treshold": "80"}, "CPUBottleneck_cpu_treshold"),
        ({"GPUBottleneck_threshold": "80"}, "GPUBottleneck_threshold"),
        ({"CPUBottleneck_threshold": "high"}, "not a number"),
    ],
)
def test_bad_parameters_are_an_error(tmp_path, parameters, message):
    outcome, _ = run_report(tmp_path, samples(5, cpu=[50.0]), **parameters)
    assert outcome.status == "Error" and message in outcome.details


def test_missing_or_unreadable_metrics_are_an_error_and_bad_lines_are_counted(tmp_path):
    assert evaluate_profiler_report(report_config(), tmp_path / "nothing", tmp_path / "o").status == "Error"
    root = write_metrics(tmp_path / "m", samples(30, cpu=[50.0]))
    first = next((root / "system").rglob("*.json"))
    with first.open("a") as handle:
        handle.write('{"Type": "cpu", "Value": 3}\nnot json\n')
    (root / "system" / "incremental" / "2026112500" / "notes.txt.json").write_text("{}\n")
    outcome = evaluate_profiler_report(report_config(), root, tmp_path / "out")
    assert outcome.status == "NoIssuesFound" and outcome.datapoints == 30
    html = (tmp_path / "out" / "profiler-output" / "profiler-report.html").read_text()
    assert "2 malformed line(s) skipped" in html and "missing Dimension, NodeId, Timestamp" in html
    assert "1 file(s) not named like system metrics ignored" in html
    broken = write_metrics(tmp_path / "b", [])
    (broken / "system" / "incremental" / "2026112500").mkdir(parents=True)
    (broken / "system" / "incremental" / "2026112500" / f"{int(START)}.algo-1.json").write_text("oops\n")
    bad = evaluate_profiler_report(report_config(), broken, tmp_path / "o2")
    assert bad.status == "Error" and "1 malformed line(s)" in bad.details
