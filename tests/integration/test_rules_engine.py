"""Every rule can trigger and can stay quiet: conditions induced in real smdebug trials and real metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
torch = pytest.importorskip("torch")
smd = pytest.importorskip("smdebug.pytorch")

from inventory_pipeline.rules.debugger import evaluate_debugger_rule  # noqa: E402
from inventory_pipeline.rules.profiler import evaluate_profiler_report, read_system_metrics  # noqa: E402

pytestmark = pytest.mark.integration
COLLECTIONS = ["gradients", "weights", "losses", "relu_input"]


def config(rule: str, **params) -> dict:
    return {"RuleConfigurationName": rule, "RuleEvaluatorImage": "local",
            "RuleParameters": {"rule_to_invoke": rule, **{k: str(v) for k, v in params.items()}}}  # fmt: skip


class Net(torch.nn.Module):
    def __init__(self, scale1: float = 1.0, scale2: float = 1.0, output_scale: float = 1.0, norm: bool = False):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 3)
        self.norm1 = torch.nn.LayerNorm(16) if norm else torch.nn.Identity()
        self.norm2 = torch.nn.LayerNorm(16) if norm else torch.nn.Identity()
        # Named "..._relu" so their inputs match SageMaker's relu_input collection (regex .*relu_input).
        self.block1_relu, self.block2_relu = torch.nn.ReLU(), torch.nn.ReLU()
        with torch.no_grad():
            self.fc1.weight.mul_(scale1)
            self.fc2.weight.mul_(scale2)
        self.output_scale = output_scale

    def forward(self, x):
        x = self.block1_relu(self.norm1(self.fc1(x)))
        x = self.block2_relu(self.norm2(self.fc2(x)))
        return self.fc3(x) * self.output_scale


def record_trial(path: Path, net: Net, steps: int = 24, lr: float = 0.05, eval_noise: bool = False,
                 frozen: bool = False, evals_every: int = 6) -> str:  # fmt: skip
    """Train `net` on a learnable toy task with a real smdebug hook saving every step."""
    torch.manual_seed(0)
    hook = smd.Hook(out_dir=str(path), save_config=smd.SaveConfig(save_interval=1), include_collections=COLLECTIONS)
    hook.get_collection("relu_input").include(".*relu_input")
    hook.register_module(net)
    loss_fn = torch.nn.CrossEntropyLoss()
    hook.register_loss(loss_fn)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0 if frozen else lr)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    for step in range(steps):
        if step and step % evals_every == 0:  # evaluate with the weights the last training step ended with
            hook.set_mode(smd.modes.EVAL)
            with torch.no_grad():
                if eval_noise:  # unseen, unlearnable data: validation loss runs away from training loss
                    loss_fn(net(torch.randn(64, 8) * 4), torch.randint(0, 3, (64,)))
                else:
                    loss_fn(net(x), y)
        hook.set_mode(smd.modes.TRAIN)
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
    hook.close()
    return str(path)


@pytest.fixture(scope="module")
def healthy_trial(tmp_path_factory) -> str:
    return record_trial(tmp_path_factory.mktemp("healthy"), Net(norm=True), steps=30, lr=0.05, evals_every=1)


def test_healthy_training_triggers_no_debugger_rule(healthy_trial):
    for rule in ("VanishingGradient", "Overfit", "PoorWeightInitialization"):
        outcome = evaluate_debugger_rule(config(rule), healthy_trial)
        assert outcome.status == "NoIssuesFound", (rule, outcome.details)
        assert outcome.datapoints > 0
    quiet = evaluate_debugger_rule(config("Overtraining", patience_train=30, patience_validation=30), healthy_trial)
    assert quiet.status == "NoIssuesFound", quiet.details


def test_vanishing_gradient_triggers_on_a_network_whose_gradients_vanish(tmp_path):
    trial = record_trial(tmp_path, Net(output_scale=1e-12))
    outcome = evaluate_debugger_rule(config("VanishingGradient"), trial)
    assert outcome.status == "IssuesFound" and "mean |gradient|" in outcome.details


def test_overfit_triggers_when_validation_loss_runs_away(tmp_path):
    trial = record_trial(tmp_path, Net(norm=True), steps=30, lr=0.3, eval_noise=True, evals_every=3)
    outcome = evaluate_debugger_rule(config("Overfit"), trial)
    assert outcome.status == "IssuesFound" and "validation loss" in outcome.details


def test_overtraining_triggers_when_the_loss_stops_improving(tmp_path):
    trial = record_trial(tmp_path, Net(), steps=12, frozen=True)  # lr 0: the loss never improves
    outcome = evaluate_debugger_rule(config("Overtraining"), trial)
    assert outcome.status == "IssuesFound" and "has not improved" in outcome.details


def test_poor_weight_initialization_triggers_on_badly_scaled_layers(tmp_path):
    trial = record_trial(tmp_path, Net(scale1=50.0, scale2=0.02))
    outcome = evaluate_debugger_rule(config("PoorWeightInitialization"), trial)
    assert outcome.status == "IssuesFound" and "variance ratio" in outcome.details


def test_rule_parameters_from_the_configuration_are_used(healthy_trial):
    # A threshold no gradient can be under (1e9) turns the healthy run into an issue: the parameter was read.
    outcome = evaluate_debugger_rule(config("VanishingGradient", threshold=1e9), healthy_trial)
    assert outcome.status == "IssuesFound" and outcome.parameters == {"threshold": 1e9}


def test_a_rule_that_cannot_run_is_an_error_never_no_issues(tmp_path):
    assert evaluate_debugger_rule(config("Overfit"), str(tmp_path / "missing")).status == "Error"
    assert evaluate_debugger_rule(config("NotARule"), str(tmp_path)).status == "Error"
    assert evaluate_profiler_report(config("ProfilerReport"), tmp_path, tmp_path / "out").status == "Error"


def _metrics(root: Path, cpu: float, seconds: int = 40, gpu: float | None = None) -> Path:
    lines = []
    start = time.time()
    for i in range(seconds):
        for core in range(2):
            lines.append({"Type": "cpu", "Name": f"cpu{core}", "Dimension": "CPUUtilization", "Value": cpu,
                          "NodeId": "algo-1", "Timestamp": start + i})  # fmt: skip
        lines.append({"Type": "memory", "Name": "MemoryUsedPercent", "Dimension": "Memory", "Value": 30.0,
                      "NodeId": "algo-1", "Timestamp": start + i})  # fmt: skip
        if gpu is not None:
            lines.append({"Type": "gpu", "Name": "gpu0", "Dimension": "GPUUtilization", "Value": gpu,
                          "NodeId": "algo-1", "Timestamp": start + i})  # fmt: skip
    path = root / "system" / "incremental" / "2026112500" / f"{int(start)}.algo-1.json"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def _reports(out: Path) -> dict:
    folder = out / "profiler-output" / "profiler-reports"
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_cpu_bottleneck_triggers_on_a_saturated_cpu_and_not_on_an_idle_one(tmp_path):
    busy = evaluate_profiler_report(config("ProfilerReport"), _metrics(tmp_path / "busy", 97.0), tmp_path / "o1")
    assert busy.status == "IssuesFound" and "CPUBottleneck" in busy.details
    reports = _reports(tmp_path / "o1")
    assert reports["CPUBottleneck"]["RuleTriggered"] == 1 and reports["CPUBottleneck"]["Violations"] == 40
    assert set(reports["CPUBottleneck"]) == {"RuleTriggered", "Violations", "Details", "Datapoints", "RuleParameters"}
    for gpu_rule in ("LowGPUUtilization", "GPUMemoryIncrease", "BatchSize", "LoadBalancing"):
        assert reports[gpu_rule]["RuleTriggered"] == 0
        assert "not applicable" in reports[gpu_rule]["Details"]["summary"]
    assert (tmp_path / "o1" / "profiler-output" / "profiler-report.html").read_text().count("<tr>") == 11

    idle = evaluate_profiler_report(config("ProfilerReport"), _metrics(tmp_path / "idle", 12.0), tmp_path / "o2")
    assert idle.status == "NoIssuesFound"


def test_low_gpu_utilization_is_evaluated_when_gpu_metrics_exist(tmp_path):
    outcome = evaluate_profiler_report(config("ProfilerReport"), _metrics(tmp_path / "g", 20.0, gpu=3.0),
                                       tmp_path / "o")  # fmt: skip
    assert outcome.status == "IssuesFound" and "LowGPUUtilization" in outcome.details


def test_sampler_output_is_read_by_smdebug_and_by_the_engine(tmp_path, project_root):
    import sys

    sys.path.insert(0, str(project_root / "training_code"))
    try:
        from system_metrics import SystemMetricsSampler
    finally:
        sys.path.remove(str(project_root / "training_code"))
    with SystemMetricsSampler(tmp_path, interval_ms=100):
        deadline = time.time() + 1.0
        while time.time() < deadline:
            sum(i * i for i in range(5000))
    from smdebug.profiler.system_metrics_reader import LocalSystemMetricsReader

    events = LocalSystemMetricsReader(str(tmp_path)).get_events(0, int(time.time() * 1e6) + 10**6)
    assert {e.dimension for e in events} >= {"CPUUtilization", "Memory"}
    assert len(read_system_metrics(tmp_path)) == len(events)
