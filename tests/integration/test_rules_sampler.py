"""training_code/system_metrics.py: its files are SageMaker's format (proven by smdebug's own Local and S3
readers), its command line follows a process, and the profiler rules judge what it measured on this machine
while the CPU is saturated."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
from inventory_pipeline.rules.profiler import evaluate_profiler_report  # noqa: E402
from inventory_pipeline.rules.storage import LocalStorage  # noqa: E402
from inventory_pipeline.rules.system_metrics_reader import read_system_metrics  # noqa: E402

pytestmark = pytest.mark.integration
SAMPLER = Path(__file__).resolve().parents[2] / "training_code" / "system_metrics.py"
FAR_FUTURE_US = 10**17


def load_sampler():
    """The file as it ships in sourcedir.tar.gz: loaded on its own, not through the package."""
    spec = importlib.util.spec_from_file_location("shipped_system_metrics", SAMPLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def saturated(tmp_path_factory) -> Path:
    """About 2.5 s of real samples, every 100 ms, while one spinning process per core saturates the CPU."""
    out = tmp_path_factory.mktemp("saturated")
    spinners = busy_processes(os.cpu_count() or 2)
    try:
        time.sleep(0.3)  # let them get going
        with load_sampler().SystemMetricsSampler(out, interval_ms=100):
            time.sleep(2.5)
    finally:
        stop(spinners)
    return out


def test_the_files_are_read_by_smdebugs_local_reader(saturated):
    from smdebug.profiler.system_metrics_reader import LocalSystemMetricsReader

    events = LocalSystemMetricsReader(str(saturated)).get_events(0, FAR_FUTURE_US)
    ours = read_system_metrics(LocalStorage(saturated))
    assert len(events) == len(ours.events) > 0 and ours.skipped_lines == 0 and not ours.ignored_files
    assert {e.dimension for e in events} >= {"CPUUtilization", "I/OWaitPercentage"}
    assert {e.name for e in events} >= {"cpu0", "MemoryUsedPercent", "ReceiveBytesPerSecond", "IOPS"}
    assert {e.node_id for e in events} == {"algo-1"} and {e.type for e in events} >= {"cpu", "memory", "i/o"}
    for path in (saturated / "system" / "incremental").rglob("*.json"):
        minute = int(path.name.split(".")[0])
        assert minute % 60 == 0 and path.parent.name == time.strftime("%Y%m%d%H", time.gmtime(minute))
        for line in path.read_text().splitlines():
            assert set(json.loads(line)) == {"Type", "Name", "Dimension", "Value", "NodeId", "Timestamp"}


def test_the_files_are_read_by_smdebugs_s3_reader(saturated, s3, bucket_name, local_stack, monkeypatch):
    from smdebug.core.access_layer.s3handler import S3Handler
    from smdebug.profiler.system_metrics_reader import S3SystemMetricsReader

    s3.create_bucket(Bucket=bucket_name)
    for path in saturated.rglob("*.json"):
        s3.upload_file(str(path), bucket_name, f"jobs/j1/profiler-output/{path.relative_to(saturated).as_posix()}")
    for key, value in local_stack.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_REGION", local_stack.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", local_stack.endpoints["s3"])  # smdebug's client takes no endpoint
    S3Handler.client.cache_clear()
    try:
        reader = S3SystemMetricsReader(f"s3://{bucket_name}/jobs/j1/profiler-output")
        events = reader.get_events(0, FAR_FUTURE_US)
    finally:
        S3Handler.client.cache_clear()
    assert len(events) == len(read_system_metrics(LocalStorage(saturated)).events) > 0


def with_gpu(root: Path, utilisation: float) -> Path:
    """Add a GPU to the sampled host: one gpu0 record per real sample, as SageMaker's monitor writes it."""
    stamps = sorted({e.timestamp for e in read_system_metrics(LocalStorage(root)).events})
    for path in (root / "system" / "incremental").rglob("*.json"):
        minute = int(path.name.split(".")[0])
        lines = [
            json.dumps(
                {
                    "Type": "gpu",
                    "Name": "gpu0",
                    "Dimension": dimension,
                    "Value": value,
                    "NodeId": "algo-1",
                    "Timestamp": stamp,
                }
            )
            for stamp in stamps
            if minute <= stamp < minute + 60
            for dimension, value in (("GPUUtilization", utilisation), ("GPUMemoryUtilization", 20.0))
        ]
        with path.open("a") as handle:
            handle.write("".join(line + "\n" for line in lines))
    return root


def profiler_report(root: Path, out: Path):
    # patience 5 instead of 1000 samples: this run is seconds long, not minutes
    config = {
        "RuleConfigurationName": "ProfilerReport",
        "RuleParameters": {"rule_to_invoke": "ProfilerReport", "CPUBottleneck_patience": "5"},
    }
    outcome = evaluate_profiler_report(config, root, out)
    report = json.loads((out / "profiler-output" / "profiler-reports" / "CPUBottleneck.json").read_text())
    return outcome, report


def test_cpu_bottleneck_judges_real_saturated_samples(saturated, tmp_path):
    import shutil

    events = read_system_metrics(LocalStorage(saturated)).events
    busy = [e.value for e in events if e.dimension == "CPUUtilization"]
    assert sum(busy) / len(busy) > 90, "the spinning processes should have saturated every core"

    cpu_only, report = profiler_report(saturated, tmp_path / "cpu-only")
    assert cpu_only.status == "NoIssuesFound" and report["Details"]["summary"].startswith("not applicable")

    starved = with_gpu(shutil.copytree(saturated, tmp_path / "starved"), utilisation=3.0)
    outcome, report = profiler_report(starved, tmp_path / "o1")
    assert outcome.status == "IssuesFound" and "CPUBottleneck" in outcome.details
    assert report["RuleTriggered"] >= 1 and report["Violations"] > 0.5 * report["Datapoints"]

    fed = with_gpu(shutil.copytree(saturated, tmp_path / "fed"), utilisation=95.0)
    outcome, report = profiler_report(fed, tmp_path / "o2")
    assert report["RuleTriggered"] == 0 and report["Violations"] == 0 and outcome.status == "NoIssuesFound"


def test_the_command_line_samples_until_the_watched_process_exits(tmp_path):
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sampler = subprocess.Popen(
        [
            sys.executable,
            str(SAMPLER),
            "--out",
            str(tmp_path / "a"),
            "--interval-ms",
            "100",
            "--node-id",
            "algo-2",
            "--pid",
            str(watched.pid),
        ]
    )
    try:
        time.sleep(1.2)
        assert sampler.poll() is None
        watched.kill()
        watched.wait()
        assert sampler.wait(timeout=10) == 0
    finally:
        for process in (watched, sampler):
            if process.poll() is None:
                process.kill()
    metrics = read_system_metrics(LocalStorage(tmp_path / "a"))
    assert len({e.timestamp for e in metrics.events}) >= 5 and {e.node for e in metrics.events} == {"algo-2"}

    terminated = subprocess.Popen([sys.executable, str(SAMPLER), "--out", str(tmp_path / "b"), "--interval-ms", "100"])
    time.sleep(1.0)
    terminated.send_signal(signal.SIGTERM)
    assert terminated.wait(timeout=10) == 0
    assert read_system_metrics(LocalStorage(tmp_path / "b")).events


def test_gpus_reported_by_nvidia_smi_are_sampled(tmp_path, monkeypatch):
    """No GPU here: a stand-in nvidia-smi prints what the real one prints for this query."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0, 37, 1024, 16384\\n1, 88, 8192, 16384\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sampler = load_sampler().SystemMetricsSampler(tmp_path / "g", interval_ms=50)
    sampler.write(sampler.sample())
    sampler.stop()
    gpu = {
        (e.name, e.dimension): e.value
        for e in read_system_metrics(LocalStorage(tmp_path / "g")).events
        if e.type == "gpu"
    }
    assert gpu == {
        ("gpu0", "GPUUtilization"): 37.0,
        ("gpu0", "GPUMemoryUtilization"): 6.25,
        ("gpu1", "GPUUtilization"): 88.0,
        ("gpu1", "GPUMemoryUtilization"): 50.0,
    }


def test_bad_sampler_settings_are_refused(tmp_path):
    module = load_sampler()
    with pytest.raises(ValueError, match="algo-<n>"):
        module.SystemMetricsSampler(tmp_path, node_id="worker-1")
    with pytest.raises(ValueError, match="interval_ms"):
        module.SystemMetricsSampler(tmp_path, interval_ms=0)
