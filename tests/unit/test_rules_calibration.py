"""The debugger rules' parameters, sized to the run's schedule, reach both rule modes the same way."""

import json

from inventory_pipeline.rules.calibration import SCHEDULE_ENV, Schedule, debugger_rule_parameters
from inventory_pipeline.rules.self_hosted import rule_configurations
from inventory_pipeline.settings import Settings
from inventory_pipeline.training.request import CHANNELS, build_training_request

CHANNEL_URIS = {c: f"s3://bucket/abid/datasets/v1/{c}.manifest" for c in CHANNELS}
SOURCEDIR = "s3://bucket/abid/code/sourcedir-abc.tar.gz"
# the demo's dataset version: 1198 train and 153 valid photos
COUNTS = {
    "train": {"1": 240, "2": 240, "3": 240, "4": 239, "5": 239},
    "valid": {"1": 31, "2": 31, "3": 31, "4": 30, "5": 30},
    "test": {"1": 30},
}


def parameters_of(configurations: list[dict]) -> dict[str, dict[str, str]]:
    return {
        c["RuleConfigurationName"]: {k: v for k, v in c["RuleParameters"].items() if k != "rule_to_invoke"}
        for c in configurations
    }


def test_a_schedule_counts_each_workers_training_steps_and_the_whole_evaluation():
    assert Schedule.for_data(12, 32, 1, 1198, 153) == Schedule(12, 38, 5)
    assert Schedule.for_data(3, 32, 2, 1198, 153) == Schedule(3, 19, 5)  # DistributedSampler halves the train set
    assert Schedule.decode(Schedule(12, 38, 5).encode()) == Schedule(12, 38, 5)
    assert Schedule.decode("") is None and Schedule.decode("12,x,5") is None and Schedule.decode(None) is None


def test_overfit_and_overtraining_are_sized_in_epochs_of_the_schedule():
    demo = debugger_rule_parameters(Schedule(12, 38, 5))
    # Overfit: from the end of epoch 4 (a third of 12), 3 evaluations in a row 25 % above training
    assert demo["Overfit"] == {"start_step": str(4 * (38 + 5)), "patience": "3", "ratio_threshold": "0.25"}
    # Overtraining: 5 epochs' worth of training steps without a new low, or 10 evaluations
    assert demo["Overtraining"] == {"patience_train": "190", "patience_validation": "10", "delta": "0.01"}
    # PoorWeightInitialization's loss check is off (patience = steps), its gradient and activation checks are not
    assert demo["PoorWeightInitialization"] == {
        "activation_inputs_regex": ".*relu_input",
        "threshold": "10.0",
        "distribution_range": "0.001",
        "patience": "10",
        "steps": "10",
    }
    short = debugger_rule_parameters(Schedule(3, 19, 5))
    assert short["Overfit"]["patience"] == "1" and short["Overfit"]["start_step"] == "24"
    # no schedule (dataset size unknown): SageMaker's defaults for Overfit and Overtraining, nothing invented
    assert set(debugger_rule_parameters(None)) == {"VanishingGradient", "PoorWeightInitialization"}


def test_the_managed_request_sends_the_calibrated_parameters():
    request = build_training_request(
        Settings(epochs=12, instance_count=1), "inventory-run-1", CHANNEL_URIS, SOURCEDIR, counts=COUNTS
    )
    sent = parameters_of(request["DebugRuleConfigurations"])
    assert sent["Overfit"] == {"start_step": "172", "patience": "3", "ratio_threshold": "0.25"}
    assert sent["Overtraining"]["patience_train"] == "190"
    assert sent["VanishingGradient"] == {"threshold": "1e-07"}
    # without the dataset's counts the SDK's configuration goes out as before (no parameters: the defaults)
    plain = build_training_request(Settings(epochs=12), "inventory-run-1", CHANNEL_URIS, SOURCEDIR)
    assert parameters_of(plain["DebugRuleConfigurations"])["Overtraining"] == {}


def test_self_hosted_evaluation_uses_the_parameters_its_request_was_sized_for():
    settings = Settings(epochs=12, instance_count=1, rules_mode="self_hosted")
    request = build_training_request(settings, "inventory-run-1", CHANNEL_URIS, SOURCEDIR, counts=COUNTS)
    assert request["Environment"][SCHEDULE_ENV] == "12,38,5" and "DebugRuleConfigurations" not in request
    # what DescribeTrainingJob returns for that job: the schedule comes back with the Environment
    debug, _ = rule_configurations({"Environment": request["Environment"]}, settings)
    managed = build_training_request(
        Settings(epochs=12, instance_count=1), "inventory-run-1", CHANNEL_URIS, SOURCEDIR, counts=COUNTS
    )
    assert parameters_of(debug) == parameters_of(managed["DebugRuleConfigurations"])
    assert json.dumps(parameters_of(debug)["Overfit"]) == json.dumps(
        {"start_step": "172", "patience": "3", "ratio_threshold": "0.25"}
    )
