"""The four debugger rules on real smdebug trials: each triggered by an induced condition and quiet on a
healthy run, configurations as the SageMaker SDK writes them, running trials followed, S3 trials read, and
Error (never NoIssuesFound) whenever a rule cannot be evaluated. Also the step-based profiler rules on a
real trial, and the self-hosted mode against the local stack."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
torch = pytest.importorskip("torch")
smd = pytest.importorskip("smdebug.pytorch")

from sagemaker.core.debugger import Rule, rule_configs  # noqa: E402

from inventory_pipeline.rules import evaluate_debugger_rule  # noqa: E402

pytestmark = pytest.mark.integration
RULES = ("VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization")
FACTORIES = {
    "VanishingGradient": "vanishing_gradient",
    "Overfit": "overfit",
    "Overtraining": "overtraining",
    "PoorWeightInitialization": "poor_weight_initialization",
}
COLLECTIONS = ("gradients", "weights", "losses", "relu_input")


def sdk_config(rule: str, **parameters) -> dict:
    """The DebugRuleConfigurations entry the SageMaker SDK writes for the built-in rule."""
    built = Rule.sagemaker(
        getattr(rule_configs, FACTORIES[rule])(),
        rule_parameters={k: str(v) for k, v in parameters.items()} or None,
    )
    return built.to_debugger_rule_config_dict()


class Net(torch.nn.Module):
    """Two hidden layers whose ReLUs are named "..._relu": SageMaker's relu_input collection matches them."""

    def __init__(self, scale1: float = 1.0, scale2: float = 1.0, output_scale: float = 1.0, norm: bool = False):
        super().__init__()
        torch.manual_seed(0)  # the same initial weights whatever ran before: a rule's outcome must not vary by order
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 3)
        self.norm1 = torch.nn.LayerNorm(16) if norm else torch.nn.Identity()
        self.norm2 = torch.nn.LayerNorm(16) if norm else torch.nn.Identity()
        self.block1_relu, self.block2_relu = torch.nn.ReLU(), torch.nn.ReLU()
        with torch.no_grad():
            self.fc1.weight.mul_(scale1)
            self.fc2.weight.mul_(scale2)
        self.output_scale = output_scale

    def forward(self, x):
        x = self.block1_relu(self.norm1(self.fc1(x)))
        x = self.block2_relu(self.norm2(self.fc2(x)))
        return self.fc3(x) * self.output_scale


def dataset(size: int, seed: int, random_labels: bool = False):
    """A learnable 3-class task (labels from two feature signs), or unlearnable random labels."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 8, generator=generator)
    y = (
        torch.randint(0, 3, (size,), generator=generator)
        if random_labels
        else (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    )
    return x, y


def record_trial(
    path: Path,
    net: Net,
    train,
    valid,
    steps: int,
    lr: float,
    eval_every: int,
    collections=COLLECTIONS,
    pause_s: float = 0.0,
) -> str:
    """Train full-batch with a real smdebug hook saving every train and eval step, as train.py's does."""
    torch.manual_seed(0)
    hook = smd.Hook(
        out_dir=str(path), save_config=smd.SaveConfig(save_interval=1), include_collections=list(collections)
    )
    hook.get_collection("relu_input").include(".*relu_input")
    hook.register_module(net)
    loss_fn = torch.nn.CrossEntropyLoss()
    hook.register_loss(loss_fn)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    for step in range(1, steps + 1):
        hook.set_mode(smd.modes.TRAIN)
        optimizer.zero_grad()
        loss_fn(net(train[0]), train[1]).backward()
        optimizer.step()
        if step % eval_every == 0:
            hook.set_mode(smd.modes.EVAL)
            with torch.no_grad():
                loss_fn(net(valid[0]), valid[1])
        time.sleep(pause_s)
    hook.close()
    return str(path)


def healthy(path: Path, **kwargs) -> str:
    return record_trial(path, Net(norm=True), dataset(1024, 1), dataset(256, 2), 20, 0.2, 5, **kwargs)


def vanishing(path: Path, **kwargs) -> str:
    # the output is scaled by 1e-12: every gradient is ~1e-13
    return record_trial(path, Net(output_scale=1e-12), dataset(64, 1), dataset(64, 2), 6, 0.2, 3, **kwargs)


@pytest.fixture(scope="module")
def healthy_trial(tmp_path_factory) -> str:
    return healthy(tmp_path_factory.mktemp("healthy"))


def test_a_healthy_run_triggers_no_rule_with_sagemakers_defaults(healthy_trial):
    for rule in RULES:
        outcome = evaluate_debugger_rule(sdk_config(rule), healthy_trial)
        assert outcome.status == "NoIssuesFound", (rule, outcome.details)
        assert outcome.datapoints > 0 and outcome.triggered == 0
        assert outcome.name == rule and "no issue" in outcome.details


def test_vanishing_gradient_triggers_when_gradients_vanish(tmp_path):
    outcome = evaluate_debugger_rule(sdk_config("VanishingGradient"), vanishing(tmp_path))
    assert outcome.status == "IssuesFound" and outcome.triggered == 1
    assert "mean |gradient|" in outcome.details and "< threshold 1e-07" in outcome.details


def test_overfit_triggers_when_a_memorised_training_set_does_not_generalise(tmp_path):
    # 16 samples with random labels, learnt by heart; validation on fresh random labels
    trial = record_trial(tmp_path, Net(norm=True), dataset(16, 1, True), dataset(64, 2, True), 40, 0.5, 10)
    outcome = evaluate_debugger_rule(sdk_config("Overfit"), trial)
    assert outcome.status == "IssuesFound" and "mean validation loss" in outcome.details


def test_overtraining_triggers_when_training_continues_after_convergence(tmp_path):
    # 8 samples over 60 steps: the loss reaches ~0 early and stops improving by `delta`
    trial = record_trial(tmp_path, Net(norm=True), dataset(8, 1), dataset(64, 2), 60, 0.5, 20)
    outcome = evaluate_debugger_rule(sdk_config("Overtraining"), trial)
    assert outcome.status == "IssuesFound" and "training loss has not improved by 0.01" in outcome.details


def test_poor_weight_initialization_triggers_on_badly_scaled_layers(tmp_path):
    trial = record_trial(tmp_path, Net(scale1=50.0, scale2=0.02), dataset(64, 1), dataset(64, 2), 6, 0.05, 3)
    outcome = evaluate_debugger_rule(sdk_config("PoorWeightInitialization"), trial)
    assert outcome.status == "IssuesFound" and "activation-input variance ratio" in outcome.details


def test_parameters_from_the_rule_configuration_are_honoured(healthy_trial):
    # No gradient's mean is above 1e9, so the healthy run violates this threshold: the parameter was read.
    strict = evaluate_debugger_rule(sdk_config("VanishingGradient", threshold=1e9), healthy_trial)
    assert strict.status == "IssuesFound" and strict.parameters == {"threshold": 1e9}
    impatient = evaluate_debugger_rule(sdk_config("Overtraining", patience_train=1, delta=10), healthy_trial)
    assert impatient.status == "IssuesFound" and impatient.parameters["delta"] == 10.0
    lenient = evaluate_debugger_rule(sdk_config("Overfit", ratio_threshold=-5), healthy_trial)
    assert lenient.status == "IssuesFound"


def test_a_rule_that_cannot_run_is_an_error_never_no_issues(tmp_path, healthy_trial):
    finished = {"job_finished": lambda: True}
    missing = evaluate_debugger_rule(sdk_config("Overfit"), str(tmp_path / "missing"), **finished)
    assert missing.status == "Error" and "No debugging data" in missing.details
    never = evaluate_debugger_rule(sdk_config("Overfit"), str(tmp_path / "missing"), timeout_s=0.3, poll_s=0.1)
    assert never.status == "Error" and "within 0.3 s" in never.details
    unknown = evaluate_debugger_rule(
        {"RuleConfigurationName": "X", "RuleParameters": {"rule_to_invoke": "Nope"}}, healthy_trial
    )
    assert unknown.status == "Error" and "unknown debugger rule 'Nope'" in unknown.details
    typo = evaluate_debugger_rule(sdk_config("Overfit", ratio_treshold=0.2), healthy_trial)
    assert typo.status == "Error" and "ratio_treshold" in typo.details
    bad_value = evaluate_debugger_rule(sdk_config("Overtraining", patience_train="five"), healthy_trial)
    assert bad_value.status == "Error" and "patience_train" in bad_value.details


def test_missing_tensors_or_phases_are_errors(tmp_path):
    no_gradients = record_trial(
        tmp_path / "w", Net(), dataset(32, 1), dataset(32, 2), 4, 0.1, 2, collections=("weights", "losses")
    )
    outcome = evaluate_debugger_rule(sdk_config("VanishingGradient"), no_gradients)
    assert outcome.status == "Error" and "'gradients' collection" in outcome.details
    no_validation = record_trial(tmp_path / "t", Net(), dataset(32, 1), dataset(32, 2), 4, 0.1, eval_every=99)
    outcome = evaluate_debugger_rule(sdk_config("Overfit"), no_validation)
    assert outcome.status == "Error" and "no EVAL-mode steps" in outcome.details


def test_an_unreadable_trial_is_an_error(tmp_path):
    trial = Path(vanishing(tmp_path))
    for event_file in (trial / "events").rglob("*.tfevents"):
        event_file.write_bytes(b"\x00" * 64)  # the index still points into them
    outcome = evaluate_debugger_rule(sdk_config("VanishingGradient"), str(trial))
    assert outcome.status == "Error" and "evaluation failed" in outcome.details


def test_an_unfinished_trial_waits_then_errors_unless_the_job_is_known_to_be_over(tmp_path):
    trial = Path(healthy(tmp_path))
    (trial / "training_job_end.ts").unlink()  # as after a killed job: smdebug never wrote its end marker
    waited = evaluate_debugger_rule(sdk_config("VanishingGradient"), str(trial), timeout_s=0.5, poll_s=0.1)
    assert waited.status == "Error" and "did not complete within 0.5 s" in waited.details
    assert "last completed step" in waited.details
    over = evaluate_debugger_rule(sdk_config("VanishingGradient"), str(trial), job_finished=lambda: True)
    assert over.status == "NoIssuesFound" and "over 24 steps" in over.details


def test_a_trial_missing_a_workers_collections_is_an_error_not_a_hang(tmp_path):
    import json

    trial = Path(vanishing(tmp_path))
    (trial / "training_job_end.ts").unlink()
    [collections] = (trial / "collections").rglob("*_collections.json")
    content = json.loads(collections.read_text())
    content["_meta"]["num_workers"] = 2  # as if the job had saved all workers and one never wrote
    collections.write_text(json.dumps(content))
    outcome = evaluate_debugger_rule(sdk_config("VanishingGradient"), str(trial), job_finished=lambda: True)
    assert outcome.status == "Error" and "only 1 of 2 workers" in outcome.details


def test_rules_follow_a_job_that_is_still_training(tmp_path):
    """Evaluation starts before the job wrote anything and concludes while it still trains (trigger) or right
    after it ends (no trigger), as SageMaker's rule jobs run beside the training job."""
    slow = tmp_path / "slow-vanishing"
    training = threading.Thread(
        target=lambda: record_trial(
            slow, Net(output_scale=1e-12), dataset(64, 1), dataset(64, 2), 12, 0.1, 4, pause_s=0.25
        )
    )
    training.start()
    try:
        outcome = evaluate_debugger_rule(sdk_config("VanishingGradient"), str(slow), poll_s=0.1, timeout_s=60)
        still_training = not (slow / "training_job_end.ts").exists()
    finally:
        training.join()
    assert outcome.status == "IssuesFound" and still_training

    quiet = tmp_path / "slow-healthy"
    training = threading.Thread(target=lambda: healthy(quiet, pause_s=0.05))
    training.start()
    try:
        outcome = evaluate_debugger_rule(sdk_config("Overfit"), str(quiet), poll_s=0.1, timeout_s=60)
    finally:
        training.join()
    assert outcome.status == "NoIssuesFound" and "4 evaluation(s) compared" in outcome.details


def _upload(s3, directory: Path, bucket: str, prefix: str) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(directory).as_posix()}")


def test_a_trial_in_s3_is_read_through_the_same_engine(s3, bucket_name, local_stack, tmp_path, monkeypatch):
    s3.create_bucket(Bucket=bucket_name)
    _upload(s3, Path(vanishing(tmp_path / "v")), bucket_name, "jobs/job-v/debug-output")
    shutil.copytree(tmp_path / "v", tmp_path / "copy")
    uri = f"s3://{bucket_name}/jobs/job-v/debug-output"
    with_client = evaluate_debugger_rule(sdk_config("VanishingGradient"), uri, s3_client=s3)
    assert with_client.status == "IssuesFound", with_client.details
    # as the runner calls it: only an endpoint, credentials and region from the environment
    for key, value in local_stack.env().items():
        monkeypatch.setenv(key, value)
    with_endpoint = evaluate_debugger_rule(sdk_config("Overfit"), uri, local_stack.endpoints["s3"])
    local = evaluate_debugger_rule(sdk_config("Overfit"), str(tmp_path / "copy"))
    assert with_endpoint.status == local.status == "NoIssuesFound"
    assert with_endpoint.details == local.details
    empty = evaluate_debugger_rule(
        sdk_config("Overfit"),
        f"s3://{bucket_name}/jobs/none/debug-output",
        s3_client=s3,
        job_finished=lambda: True,
    )
    assert empty.status == "Error" and "No debugging data" in empty.details


def _shipped_sampler():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "training_code" / "system_metrics.py"
    spec = importlib.util.spec_from_file_location("shipped_system_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SystemMetricsSampler


def _report_config(**overrides) -> dict:
    return {
        "RuleConfigurationName": "ProfilerReport",
        "RuleParameters": {"rule_to_invoke": "ProfilerReport", **{k: str(v) for k, v in overrides.items()}},
    }


def _profiler_reports(out: Path) -> dict:
    folder = out / "profiler-output" / "profiler-reports"
    import json

    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_step_rules_time_the_steps_of_a_real_trial(tmp_path):
    """StepOutlier and MaxInitializationTime read step timings from the trial's event records: 160 quick
    training steps of which 11 are slowed down by 0.6 s, after a 1 s start-up."""
    from inventory_pipeline.rules import evaluate_profiler_report

    torch.manual_seed(0)
    net, loss_fn = Net(norm=True), torch.nn.CrossEntropyLoss()
    x, y = dataset(32, 1)
    job_start = time.time()
    with _shipped_sampler()(tmp_path / "profiler-output", interval_ms=200):
        time.sleep(1.0)  # "initialisation"
        hook = smd.Hook(
            out_dir=str(tmp_path / "trial"),
            save_config=smd.SaveConfig(save_interval=1),
            include_collections=["losses"],
        )
        hook.register_module(net)
        hook.register_loss(loss_fn)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        for step in range(160):
            hook.set_mode(smd.modes.TRAIN)
            optimizer.zero_grad()
            loss_fn(net(x), y).backward()
            optimizer.step()
            if step % 14 == 13:
                time.sleep(0.6)
        hook.close()
    args = (tmp_path / "profiler-output",)
    kwargs = {"trial_path": str(tmp_path / "trial"), "training_start": job_start}
    outcome = evaluate_profiler_report(
        _report_config(MaxInitializationTime_threshold=0.01), *args, tmp_path / "a", **kwargs
    )
    reports = _profiler_reports(tmp_path / "a")
    assert outcome.status == "IssuesFound", outcome.details
    assert reports["StepOutlier"]["RuleTriggered"] >= 1 and reports["StepOutlier"]["Violations"] == 11
    assert reports["StepOutlier"]["Details"]["step_details"]["worker_0/TRAIN"]["steps"] == 159
    init = reports["MaxInitializationTime"]["Details"]["initialization_s"]
    assert reports["MaxInitializationTime"]["RuleTriggered"] == 1 and 1.0 <= init < 10
    quiet = evaluate_profiler_report(_report_config(StepOutlier_n_outliers=11), *args, tmp_path / "b", **kwargs)
    reports = _profiler_reports(tmp_path / "b")
    assert quiet.status == "NoIssuesFound", quiet.details
    assert reports["StepOutlier"]["RuleTriggered"] == 0 and reports["MaxInitializationTime"]["RuleTriggered"] == 0


def test_self_hosted_rules_read_a_finished_job_from_s3_and_write_where_sagemaker_would(s3, bucket_name, tmp_path):
    import datetime as dt

    from sagemaker.core.debugger import ProfilerRule

    from inventory_pipeline.rules import evaluate_job_rules
    from inventory_pipeline.settings import Settings

    s3.create_bucket(Bucket=bucket_name)
    output, job = f"s3://{bucket_name}/abid/training-jobs", "job-self-hosted"
    with _shipped_sampler()(tmp_path / "profiler-output", interval_ms=100):
        trial = Path(vanishing(tmp_path / "debug-output"))
    _upload(s3, trial, bucket_name, f"abid/training-jobs/{job}/debug-output")
    _upload(s3, tmp_path / "profiler-output", bucket_name, f"abid/training-jobs/{job}/profiler-output")
    rules = [sdk_config(rule) for rule in RULES]
    rules.append(ProfilerRule.sagemaker(rule_configs.ProfilerReport()).to_profiler_rule_config_dict())
    describe = {
        "TrainingJobName": job,
        "OutputDataConfig": {"S3OutputPath": output},
        "TrainingStartTime": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
    }

    result = evaluate_job_rules(s3, describe, rules)
    statuses = {s["RuleConfigurationName"]: s for s in result["DebugRuleEvaluationStatuses"]}
    assert set(statuses) == set(RULES)
    assert statuses["VanishingGradient"]["RuleEvaluationStatus"] == "IssuesFound"
    assert all(
        set(s) == {"RuleConfigurationName", "RuleEvaluationStatus", "StatusDetails", "LastModifiedTime"}
        for s in [*statuses.values(), *result["ProfilerRuleEvaluationStatuses"]]
    )
    [profiler] = result["ProfilerRuleEvaluationStatuses"]
    assert profiler["RuleConfigurationName"] == "ProfilerReport" and profiler["RuleEvaluationStatus"] == "NoIssuesFound"
    keys = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket_name, Prefix=f"abid/training-jobs/{job}/rule-output/")["Contents"]
    }
    prefix = f"abid/training-jobs/{job}/rule-output"
    assert f"{prefix}/VanishingGradient/outcome.json" in keys
    assert f"{prefix}/ProfilerReport/profiler-output/profiler-report.html" in keys
    assert {
        f"{prefix}/ProfilerReport/profiler-output/profiler-reports/{r}.json"
        for r in ("CPUBottleneck", "StepOutlier", "OverallSystemUsage", "MaxInitializationTime")
    } <= keys

    # the configurations may also come from the job itself, or from the Settings the request was built from
    from_describe = evaluate_job_rules(s3, {**describe, "DebugRuleConfigurations": rules[:1]})
    assert [s["RuleEvaluationStatus"] for s in from_describe["DebugRuleEvaluationStatuses"]] == ["IssuesFound"]
    from_settings = evaluate_job_rules(s3, describe, Settings())
    assert [s["RuleConfigurationName"] for s in from_settings["DebugRuleEvaluationStatuses"]] == list(RULES)

    # The DAG passes its verdicts prefix: the output goes there, and the report reads the evaluation the
    # statuses record, not a ProfilerReport-<larger number> folder the job wrote beside its own output.
    from inventory_pipeline.reports.build import profiler_reports

    verdicts = f"s3://{bucket_name}/abid/verdicts"
    judged = evaluate_job_rules(s3, describe, rules, output_base=verdicts)
    assert judged["RuleOutputPath"] == verdicts
    real = f"abid/verdicts/{job}/rule-output/ProfilerReport/profiler-output/profiler-reports/OverallSystemUsage.json"
    assert s3.head_object(Bucket=bucket_name, Key=real)
    forged = {"RuleTriggered": 0, "Violations": 0, "Details": {"forged": True}}
    for base in ("training-jobs", "verdicts"):
        key = (
            f"abid/{base}/{job}/rule-output/ProfilerReport-99999999/profiler-output/profiler-reports/CPUBottleneck.json"
        )
        s3.put_object(Bucket=bucket_name, Key=key, Body=json.dumps(forged).encode())
    read = profiler_reports(s3, {**describe, **judged})
    assert {"CPUBottleneck", "OverallSystemUsage"} <= set(read)
    assert "forged" not in json.dumps(read)

    nothing = evaluate_job_rules(s3, {**describe, "TrainingJobName": "job-that-saved-nothing"}, rules)
    assert {s["RuleEvaluationStatus"] for s in nothing["DebugRuleEvaluationStatuses"]} == {"Error"}
    assert nothing["ProfilerRuleEvaluationStatuses"][0]["RuleEvaluationStatus"] == "Error"
    assert "No debugging data" in nothing["DebugRuleEvaluationStatuses"][0]["StatusDetails"]


def calibrated(rule: str, epochs: int, train_steps: int, eval_steps: int = 1) -> dict:
    """The configuration the request builder sends for `rule` on this schedule (rules/calibration.py)."""
    from inventory_pipeline.rules.calibration import Schedule, debugger_rule_parameters

    parameters = debugger_rule_parameters(Schedule(epochs, train_steps, eval_steps))[rule]
    return sdk_config(rule, **parameters)


def test_the_calibrated_parameters_stay_quiet_on_a_healthy_run(healthy_trial):
    # healthy(): 20 full-batch steps, an evaluation every 5: 4 "epochs" of 5 training steps
    for rule in RULES:
        outcome = evaluate_debugger_rule(calibrated(rule, 4, 5), healthy_trial)
        assert outcome.status == "NoIssuesFound", (rule, outcome.details)


def test_the_calibrated_parameters_catch_each_induced_fault(tmp_path):
    memorised = record_trial(tmp_path / "o", Net(norm=True), dataset(16, 1, True), dataset(64, 2, True), 40, 0.5, 10)
    outcome = evaluate_debugger_rule(calibrated("Overfit", 4, 10), memorised)
    assert outcome.status == "IssuesFound" and "ratio_threshold=0.25" in outcome.details  # names its parameters
    # 8 samples for 200 steps: learnt in a few dozen, then 20 "epochs" of 10 steps with nothing left to learn
    converged = record_trial(tmp_path / "t", Net(norm=True), dataset(8, 1), dataset(64, 2), 200, 0.5, 10)
    outcome = evaluate_debugger_rule(calibrated("Overtraining", 20, 10), converged)
    assert outcome.status == "IssuesFound" and "has not improved by 0.01" in outcome.details
    assert "patience_train=50" in outcome.details
    outcome = evaluate_debugger_rule(calibrated("VanishingGradient", 2, 3), vanishing(tmp_path / "v"))
    assert outcome.status == "IssuesFound" and "threshold=1e-07" in outcome.details
    badly_scaled = record_trial(
        tmp_path / "p", Net(scale1=50.0, scale2=0.02), dataset(64, 1), dataset(64, 2), 6, 0.05, 3
    )
    outcome = evaluate_debugger_rule(calibrated("PoorWeightInitialization", 2, 3), badly_scaled)
    assert outcome.status == "IssuesFound" and "activation-input variance ratio" in outcome.details
