"""The CreateTrainingJob request: the study's configuration, validated by botocore's model."""

import json

import pytest

from inventory_pipeline.settings import Settings
from inventory_pipeline.training.request import CHANNELS, RequestError, build_training_request, rule_names

CHANNEL_URIS = {c: f"s3://bucket/abid/datasets/v1/{c}/" for c in CHANNELS}
SOURCEDIR = "s3://bucket/abid/code/sourcedir-abc.tar.gz"


def build(**settings):
    return build_training_request(Settings(**settings), "inventory-run-1", CHANNEL_URIS, SOURCEDIR, run_id="run-1")


KMS_OUT = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_matches_the_studys_configuration():
    request = build()
    assert request["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 2
    hp = {k: json.loads(v) for k, v in request["HyperParameters"].items()}
    assert (hp["batch-size"], hp["lr"], hp["epochs"], hp["model"]) == (32, 0.001, 3, "resnet50")
    assert hp["sagemaker_program"] == "train.py" and hp["sagemaker_submit_directory"] == SOURCEDIR
    assert request["AlgorithmSpecification"]["TrainingImage"].startswith(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    )
    hook = request["DebugHookConfig"]
    assert hook["HookParameters"] == {"train.save_interval": "1", "eval.save_interval": "1"}
    collections = {c["CollectionName"]: c.get("CollectionParameters", {}) for c in hook["CollectionConfigurations"]}
    assert set(collections) == {"gradients", "relu_input", "losses"}
    # as the SDK's estimator sends them: the rules' collections keep their own interval
    assert collections["gradients"]["save_interval"] == collections["relu_input"]["save_interval"] == "500"
    assert collections["relu_input"]["include_regex"] == ".*relu_input"
    assert request["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    assert rule_names(request) == {
        "debug": ["VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization"],
        "profiler": ["ProfilerReport"],
    }
    assert all("sagemaker-debugger-rules" in r["RuleEvaluatorImage"] for r in request["DebugRuleConfigurations"])
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "valid", "test"]
    names = {d["Name"] for d in request["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"train:loss", "valid:loss", "valid:accuracy", "test:accuracy"} <= names


def test_self_hosted_mode_sends_no_debugger_configuration():
    request = build(rules_mode="self_hosted")
    assert not {"DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations"} & set(request)
    env = request["Environment"]
    assert env["INVENTORY_DEBUG_S3_OUTPUT"].endswith("/inventory-run-1/debug-output")
    assert json.loads(env["INVENTORY_DEBUG_COLLECTIONS"])["relu_input"] == {
        "include_regex": ".*relu_input",
        "save_interval": "500",
    }
    assert all(len(value) <= 512 for value in env.values())  # SageMaker's cap on Environment values
    assert env["INVENTORY_PROFILER_S3_OUTPUT"].endswith("/inventory-run-1/profiler-output")
    assert all(len(v) <= 512 for v in env.values())  # SageMaker's limit per value


def test_network_and_encryption_options_reach_the_request():
    request = build(
        subnets=("subnet-0a1b2c3d",),
        security_group_ids=("sg-0a1b2c3d",),
        output_kms_key_id=KMS_OUT,
        volume_kms_key_id="alias/inventory-volume",
        enable_network_isolation=True,
        inter_container_encryption=True,
    )
    assert request["VpcConfig"] == {"Subnets": ["subnet-0a1b2c3d"], "SecurityGroupIds": ["sg-0a1b2c3d"]}
    assert (
        request["OutputDataConfig"]["KmsKeyId"] == KMS_OUT
        and request["ResourceConfig"]["VolumeKmsKeyId"] == "alias/inventory-volume"
    )
    assert request["EnableNetworkIsolation"] and request["EnableInterContainerTrafficEncryption"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        # a type the deployment allows by mistake (a typo in INVENTORY_ALLOWED_INSTANCE_TYPES) is still refused
        ({"instance_type": "ml.c5.huge", "allowed_instance_types": ("ml.c5.huge",)}, "instance_type"),
        ({"framework_version": "0.1"}, "framework_version"),
    ],
)
def test_invalid_settings_are_named(kwargs, field):
    with pytest.raises(RequestError, match=field):
        build(**kwargs)


def test_bad_job_name_and_channels_are_refused():
    with pytest.raises(ValueError, match="invalid training job name"):
        build_training_request(Settings(), "x" * 64, CHANNEL_URIS, SOURCEDIR)
    with pytest.raises(RequestError, match="channels"):
        build_training_request(Settings(), "ok-name", {"train": "s3://b/t/"}, SOURCEDIR)


def test_spot_training_sets_max_wait_and_checkpoints_under_the_jobs_prefix():
    request = build(use_spot=True, max_runtime_s=1800, max_wait_s=7200)
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {
        "S3Uri": "s3://inventory-retraining/abid/training-jobs/inventory-run-1/checkpoints",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["Environment"]["INVENTORY_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"
    plain = build()
    assert not {"EnableManagedSpotTraining", "CheckpointConfig"} & set(plain)
    assert plain["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}


def test_spot_max_wait_shorter_than_the_runtime_is_refused_by_name():
    from inventory_pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match="max_wait_s"):
        Settings(use_spot=True, max_runtime_s=3600, max_wait_s=600)


def test_each_job_is_tagged_with_its_deployment_dag_and_run():
    request = build_training_request(
        Settings(deployment_id="prod-eu"), "inventory-run-1", CHANNEL_URIS, SOURCEDIR, run_id="r1", dag_id="d1"
    )
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["inventory:deployment"] == "prod-eu"
    assert (tags["inventory:dag-id"], tags["inventory:run-id"]) == ("d1", "r1")
    # without a deployment id, the bucket and prefix the deployment's runs share name it
    assert {t["Key"]: t["Value"] for t in build()["Tags"]}["inventory:deployment"] == "inventory-retraining/abid"


def test_network_isolation_param_and_max_runtime_reach_the_request():
    settings = Settings.from_sources({"network_isolation": True, "max_runtime_s": 900}, env={})
    request = build_training_request(settings, "inventory-run-1", CHANNEL_URIS, SOURCEDIR)
    assert request["EnableNetworkIsolation"] is True
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 900


def test_rules_mode_auto_is_the_default_and_builds_the_managed_request_first():
    assert Settings().rules_mode == "auto"
    assert rule_names(build())["debug"]


def test_self_hosted_rules_cannot_run_in_an_isolated_job():
    from inventory_pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match="network isolation forbids"):
        Settings(enable_network_isolation=True, rules_mode="self_hosted")


def test_a_dataset_versions_channels_are_manifest_files_in_a_request_botocore_accepts():
    from inventory_pipeline.dataset.split import channels
    from inventory_pipeline.training.request import validate_request

    uris = channels("bucket", "abid/", "0123456789abcdef")
    request = build_training_request(
        Settings(pretrained_s3_uri="s3://bucket/weights/"), "inventory-run-1", uris, SOURCEDIR, run_id="run-1"
    )
    sources = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    for split in CHANNELS:
        assert sources[split] == {
            "S3DataType": "ManifestFile",
            "S3DataDistributionType": "FullyReplicated",
            "S3Uri": f"s3://bucket/abid/datasets/0123456789abcdef/{split}.manifest",
        }
    assert sources["pretrained"]["S3DataType"] == "S3Prefix"
    validate_request(request)  # botocore's SageMaker model: ManifestFile is one of S3DataType's values
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataType"] = "Manifest"
    with pytest.raises(RequestError):
        validate_request(request)


def test_the_sources_class_counts_reach_the_job_as_its_population_prior():
    counts = {"1": 1228, "2": 2299, "3": 2666, "4": 2373, "5": 1875}
    request = build_training_request(Settings(), "inventory-run-1", CHANNEL_URIS, SOURCEDIR, population_counts=counts)
    assert json.loads(request["HyperParameters"]["population-counts"]) == "1228,2299,2666,2373,1875"
    # unknown, or a count the source lacks: no hyperparameter (the job falls back to ABID's mix)
    assert "population-counts" not in build()["HyperParameters"]
    lacking = build_training_request(
        Settings(), "inventory-run-1", CHANNEL_URIS, SOURCEDIR, population_counts={**counts, "5": 0}
    )
    assert "population-counts" not in lacking["HyperParameters"]
