import pytest

from inventory_pipeline.settings import Settings, SettingsError


def test_defaults_are_the_studys_configuration():
    s = Settings()
    assert (s.instance_type, s.instance_count, s.batch_size, s.lr, s.epochs, s.model) == (
        "ml.c5.xlarge",
        2,
        32,
        0.001,
        3,
        "resnet50",
    )
    assert s.root == "abid/"


def test_params_override_environment_and_are_coerced():
    env = {
        "INVENTORY_BUCKET": "team-bucket",
        "INVENTORY_PREFIX": "team/x",
        "INVENTORY_SUBNETS": "subnet-0a1b2c3d,subnet-0a1b2c3e",
        "INVENTORY_SECURITY_GROUP_IDS": "sg-0a1b2c3d",
        "INVENTORY_OUTPUT_KMS_KEY_ID": "alias/inventory-output",
        "INVENTORY_ENABLE_NETWORK_ISOLATION": "true",
    }
    s = Settings.from_sources({"epochs": "5", "lr": "0.01", "fail_on_rules": ["Overfit"], "bucket": None}, env)
    assert s.bucket == "team-bucket" and s.root == "team/x/"
    assert s.epochs == 5 and s.lr == 0.01 and s.fail_on_rules == ("Overfit",)
    assert s.subnets == ("subnet-0a1b2c3d", "subnet-0a1b2c3e") and s.enable_network_isolation is True
    assert s.output_kms_key_id == "alias/inventory-output"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"instance_count": 0}, "instance_count"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"model": "vgg"}, "model"),
        ({"rules_mode": "sometimes"}, "rules_mode"),
        ({"fail_on_rules": ["NotARule"]}, "fail_on_rules"),
        ({"bucket": "Bad_Bucket"}, "bucket"),
        ({"lr": "fast"}, "lr"),
        ({"instance_type": "c5.xlarge"}, "instance_type"),
        ({"subnets": ["subnet-0a1b2c3d"]}, "subnets"),  # VPC mode needs security groups too
        ({"subnets": ["vpc-0a1b2c3d"], "security_group_ids": ["sg-0a1b2c3d"]}, "subnets"),
        ({"subnets": ["subnet-0a1b2c3d"], "security_group_ids": ["0a1b2c3d"]}, "security_group_ids"),
        ({"output_kms_key_id": "my key"}, "output_kms_key_id"),
        ({"volume_kms_key_id": "arn:aws:s3:::bucket"}, "volume_kms_key_id"),
        ({"enable_network_isolation": "maybe"}, "enable_network_isolation"),
    ],
)
def test_invalid_values_name_their_field(params, field):
    with pytest.raises(SettingsError) as info:
        Settings.from_sources(params, env={})
    assert info.value.field_name == field
    assert repr(field) in str(info.value)


def test_only_declared_params_are_read_from_a_run():
    """Airflow merges undeclared run-conf keys into a task's params: those must never reach the settings."""
    env = {"INVENTORY_BUCKET": "team-bucket", "INVENTORY_ROLE_ARN": "arn:aws:iam::111111111111:role/team"}
    merged = {
        "epochs": 5,
        "bucket": "attacker-bucket",
        "role_arn": "arn:aws:iam::000000000000:role/other",
        "subnets": ["subnet-0a1b2c3d"],
        "enable_network_isolation": False,
    }
    s = Settings.from_sources(merged, env, declared={"epochs", "model"})
    assert s.epochs == 5
    assert s.bucket == "team-bucket" and s.role_arn == "arn:aws:iam::111111111111:role/team"
    assert s.subnets == () and s.enable_network_isolation is False


def test_a_conf_with_undeclared_keys_is_refused_naming_them():
    from inventory_pipeline.settings import RunConfError, refuse_undeclared

    refuse_undeclared({"epochs": 3}, {"epochs", "model"})  # declared only: fine
    with pytest.raises(RunConfError) as info:
        refuse_undeclared({"epochs": 3, "role_arn": "x", "bucket": "b"}, {"epochs", "model"})
    assert info.value.keys == ["bucket", "role_arn"]
    assert "bucket, role_arn" in str(info.value)


def test_the_dag_offers_exactly_the_rules_settings_knows():
    """One rule list: the Params form offers settings.KNOWN_RULES, less those that can never be evaluated."""
    import runpy
    from pathlib import Path

    from inventory_pipeline.rules.applicability import NEVER_EVALUATED
    from inventory_pipeline.settings import KNOWN_MODELS, KNOWN_RULES

    dag_file = Path(__file__).resolve().parents[2] / "dags" / "inventory_retraining.py"
    dag = runpy.run_path(str(dag_file))["dag"]
    offered = dag.params.get_param("fail_on_rules").schema["items"]["enum"]
    assert offered == [rule for rule in KNOWN_RULES if rule not in NEVER_EVALUATED]
    assert dag.params.get_param("model").schema["enum"] == list(KNOWN_MODELS)


@pytest.mark.parametrize("rule", ["StepOutlier", "MaxInitializationTime"])
def test_a_blocking_step_rule_is_refused_where_sagemakers_managed_rules_cannot_evaluate_it(rule):
    """Issue 26 (5): SageMaker's ProfilerReport reads these from its framework profiler, which this pipeline does not
    run, so on AWS they would be NotEvaluated and block every run; our engine evaluates them (self_hosted)."""
    for mode in ("managed", "auto"):
        with pytest.raises(SettingsError, match="framework profiler") as refused:
            Settings(fail_on_rules=(rule,), rules_mode=mode)
        assert f"rules_mode {mode}" in str(refused.value) and "self_hosted" in str(refused.value)
    assert Settings(fail_on_rules=(rule,), rules_mode="self_hosted").fail_on_rules == (rule,)


def test_a_file_list_comes_only_from_where_the_deployment_reads_them():
    """Issue 26 (2): a Param could name any file on the worker's disk, or any bucket the worker's role reads."""
    with pytest.raises(SettingsError, match="must be an s3:// URI") as refused:
        Settings(file_list="/etc/airflow/secrets.json")
    assert "INVENTORY_ALLOW_LOCAL_FILE_LIST" in str(refused.value)
    with pytest.raises(SettingsError, match="not from s3://project-bucket/"):
        Settings(source_bucket="aft-vbi-pds", file_list="s3://project-bucket/secrets.json")
    assert Settings(source_bucket="my-source", file_list="s3://my-source/file_list.json").file_list
    allowed = Settings.from_sources(
        {"file_list": "s3://lists/file_list.json"}, {"INVENTORY_FILE_LIST_BUCKETS": "lists,other"}
    )
    assert allowed.file_list_buckets == ("lists", "other")
    local = Settings.from_sources({"file_list": "/data/file_list.json"}, {"INVENTORY_ALLOW_LOCAL_FILE_LIST": "true"})
    assert local.file_list == "/data/file_list.json"


def test_one_precedence_param_then_variable_then_environment_then_default(monkeypatch):
    from inventory_pipeline.settings import DeploymentValues

    monkeypatch.setenv("INVENTORY_MAX_RUNTIME_S", "1800")
    monkeypatch.setenv("INVENTORY_MAX_WAIT_S", "5400")
    variables = {"INVENTORY_MAX_RUNTIME_S": "7200"}
    asked: list[str] = []

    def variable(name: str) -> str | None:
        asked.append(name)
        return variables.get(name)

    deployment = DeploymentValues(variable)
    settings = Settings.from_sources({"max_runtime_s": None}, deployment, declared={"max_runtime_s"})
    assert settings.max_runtime_s == 7200  # the Variable over the environment
    assert settings.max_wait_s == 5400  # no Variable: the environment
    assert settings.epochs == Settings().epochs  # neither: the default
    assert len(asked) == len(set(asked))  # each name asked once per DeploymentValues
    given = Settings.from_sources({"max_runtime_s": 900}, deployment, declared={"max_runtime_s"})
    assert given.max_runtime_s == 900  # a Param given in the run over everything


def test_a_run_may_switch_spot_and_isolation_on_but_not_off():
    from inventory_pipeline.settings import DeploymentValues

    on = DeploymentValues({"INVENTORY_USE_SPOT": "true", "INVENTORY_ENABLE_NETWORK_ISOLATION": "true"}.get)
    params = {"use_spot": False, "network_isolation": False}
    settings = Settings.from_sources(params, on, declared=set(params))
    assert settings.use_spot and settings.enable_network_isolation
    off = DeploymentValues({}.get)
    asked = Settings.from_sources({"use_spot": True, "network_isolation": True}, off, declared=set(params))
    assert asked.use_spot and asked.enable_network_isolation
