"""Rule configurations as the SageMaker SDK writes them, the storage seam and the small readers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from sagemaker.core.debugger import ProfilerRule, Rule, rule_configs

from inventory_pipeline.rules.debugger_rules import RuleConfigError, resolve_rule
from inventory_pipeline.rules.profiler import resolve_parameters
from inventory_pipeline.rules.step_timeline import first_wall_time, read_step_timeline
from inventory_pipeline.rules.storage import END_OF_JOB, LocalStorage, mirror, open_storage
from inventory_pipeline.rules.system_metrics_reader import parse_event


def test_the_sdks_debugger_rule_configurations_resolve_to_sagemakers_documented_defaults():
    expected = {
        "vanishing_gradient": ("VanishingGradient", {"threshold": 1e-7}),
        "overfit": (
            "Overfit",
            {"tensor_regex": None, "start_step": 0, "patience": 1, "ratio_threshold": 0.1},
        ),
        "overtraining": ("Overtraining", {"patience_train": 5, "patience_validation": 10, "delta": 0.01}),
        "poor_weight_initialization": (
            "PoorWeightInitialization",
            {
                "activation_inputs_regex": ".*relu_input",
                "threshold": 10.0,
                "distribution_range": 0.001,
                "patience": 5,
                "steps": 10,
            },
        ),
    }
    for factory, (name, defaults) in expected.items():
        config = Rule.sagemaker(getattr(rule_configs, factory)()).to_debugger_rule_config_dict()
        resolved_name, _, parameters = resolve_rule(config)
        assert (resolved_name, parameters) == (name, defaults)


def test_rule_parameters_arrive_as_strings_and_are_typed():
    config = Rule.sagemaker(
        rule_configs.overfit(),
        rule_parameters={"patience": "3", "ratio_threshold": "0.25", "tensor_regex": ".*loss.*"},
    ).to_debugger_rule_config_dict()
    assert resolve_rule(config)[2] == {
        "tensor_regex": ".*loss.*",
        "start_step": 0,
        "patience": 3,
        "ratio_threshold": 0.25,
    }
    with pytest.raises(RuleConfigError, match="patience=.2.5. is not a valid int"):
        resolve_rule({"RuleParameters": {"rule_to_invoke": "Overfit", "patience": "2.5"}})
    with pytest.raises(RuleConfigError, match="unknown debugger rule 'ExplodingTensor'"):
        resolve_rule({"RuleParameters": {"rule_to_invoke": "ExplodingTensor"}})
    # without rule_to_invoke the configuration name decides, as for the SDK's own names
    assert resolve_rule({"RuleConfigurationName": "Overtraining"})[0] == "Overtraining"


def test_the_sdks_profiler_report_overrides_are_parsed():
    config = ProfilerRule.sagemaker(
        rule_configs.ProfilerReport(CPUBottleneck_cpu_threshold=80, StepOutlier_mode="TRAIN")
    ).to_profiler_rule_config_dict()
    parameters = resolve_parameters(config)
    assert len(parameters) == 10 and parameters["CPUBottleneck"]["cpu_threshold"] == 80
    assert parameters["StepOutlier"]["mode"] == "TRAIN" and parameters["IOBottleneck"]["io_threshold"] == 50


def test_mirror_copies_only_new_files_with_index_after_events_and_the_end_marker_last(tmp_path):
    source = tmp_path / "src"
    for key in (
        END_OF_JOB,
        "index/000000000/000000000000_worker_0.json",
        "events/000000000000/a.tfevents",
        "collections/000000000/worker_0_collections.json",
    ):
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_text(key)

    class Recording(LocalStorage):
        order: list[str] = []

        def download(self, key: str, target: Path) -> None:
            self.order.append(key)
            super().download(key, target)

    seen: dict[str, str] = {}
    recording = Recording(source)
    assert mirror(recording, tmp_path / "dst", seen) == 4
    assert [k.split("/")[0] for k in recording.order] == ["events", "collections", "index", END_OF_JOB]
    assert mirror(recording, tmp_path / "dst", seen) == 0
    (source / "events" / "000000000001" / "b.tfevents").parent.mkdir(parents=True)
    (source / "events" / "000000000001" / "b.tfevents").write_text("new")
    assert mirror(recording, tmp_path / "dst", seen) == 1
    assert (tmp_path / "dst" / "events" / "000000000001" / "b.tfevents").read_text() == "new"


def test_open_storage_chooses_local_or_s3():
    assert isinstance(open_storage("/tmp/x"), LocalStorage)
    s3 = open_storage("s3://bucket/some/prefix/", client=object())
    assert (s3.bucket, s3.prefix, s3.uri) == ("bucket", "some/prefix", "s3://bucket/some/prefix")


def test_wall_time_is_read_from_the_first_record_header_only(tmp_path):
    data = b"\x09" + struct.pack("<d", 1_790_000_123.25) + b"\x10\x05" + b"x" * 1000
    record = struct.pack("<Q", len(data)) + b"\0\0\0\0" + data + b"\0\0\0\0"
    assert first_wall_time(record[:21]) == 1_790_000_123.25
    assert first_wall_time(b"\x00" * 21) is None and first_wall_time(b"") is None
    trial = tmp_path / "trial"
    (trial / "events" / "000000000003").mkdir(parents=True)
    (trial / "events" / "000000000003" / "000000000003_worker_0.tfevents").write_bytes(record)
    (trial / "index" / "000000000").mkdir(parents=True)
    meta = {
        "meta": {
            "mode": "EVAL",
            "mode_step": 1,
            "event_file_name": "events/000000000003/000000000003_worker_0.tfevents",
        }
    }
    (trial / "index" / "000000000" / "000000000003_worker_0.json").write_text(json.dumps(meta))
    (trial / "index" / "000000000" / "000000000004_worker_0.json").write_text("{broken")
    timeline = read_step_timeline(LocalStorage(trial))
    assert [(s.step, s.mode, s.mode_step, s.start) for s in timeline.steps] == [(3, "EVAL", 1, 1_790_000_123.25)]
    assert timeline.trial_found and not timeline.ended and "000000000004_worker_0.json" in timeline.problems[0]


@pytest.mark.parametrize(
    "record, problem",
    [
        ([], "not a JSON object"),
        ({"Type": "cpu"}, "missing Dimension, Value, NodeId, Timestamp"),
        (
            {"Type": "cpu", "Dimension": "", "Value": "7", "NodeId": "algo-1", "Timestamp": 1.0},
            "must be numbers",
        ),
    ],
)
def test_malformed_metric_records_say_what_is_wrong(record, problem):
    with pytest.raises(ValueError, match=problem):
        parse_event(record)
