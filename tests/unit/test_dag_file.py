"""The DAG file parses cleanly, imports nothing heavy, and its Params make a usable trigger form."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sagemaker", "boto3", "botocore", "matplotlib", "pandas", "smdebug", "PIL")


@pytest.fixture(scope="module")
def parsed():
    """Parse the DAG in a fresh interpreter as the DAG processor does (it pre-imports the `airflow.*` modules the
    file names, once, before forking each parse) and report what the parse itself loaded."""
    code = f"""
import importlib, json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.bases.sensor import BaseSensorOperator
from airflow.utils.file import iter_airflow_imports
for module in iter_airflow_imports({str(ROOT / "dags" / "inventory_retraining.py")!r}):
    importlib.import_module(module)
pre_imported = {{m.split('.')[0] for m in sys.modules}}
bag = DagBag({str(ROOT / "dags")!r})
dag = bag.dags.get("inventory_retraining")
heavy = sorted(({{m.split('.')[0] for m in sys.modules}} - pre_imported) & set({HEAVY!r}))
print(json.dumps({{
    "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
    "heavy": heavy,
    "pre_imported_heavy": sorted(pre_imported & set({HEAVY!r})),
    "tasks": [t.task_id for t in dag.tasks] if dag else None,
    "max_active_runs": dag.max_active_runs if dag else None,
    "bases": {{t.task_id: [f"{{c.__module__}}.{{c.__name__}}" for c in type(t).__mro__]
              for t in dag.tasks}} if dag else None,
    "catchup": dag.catchup if dag else None,
    "teardowns": sorted(t.task_id for t in dag.tasks if t.is_teardown) if dag else None,
    "trigger_rules": {{t.task_id: str(t.trigger_rule) for t in dag.tasks}} if dag else None,
    "leaves": sorted(t.task_id for t in dag.leaves) if dag else None,
    "params": dag.params.dump() if dag else None,
    "schema": {{k: dag.params.get_param(k).schema for k in dag.params}} if dag else None,
    "sensors": {{t.task_id: {{"timeout": t.timeout, "mode": t.mode, "poke_interval": t.poke_interval}}
                for t in dag.tasks if isinstance(t, BaseSensorOperator)}} if dag else None,
}}, default=str))
"""
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(ROOT / "plugins")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parses_without_import_errors_or_heavy_imports(parsed):
    assert parsed["errors"] == {}
    assert parsed["heavy"] == []
    # What the processor pre-imports for the file (the Amazon provider's SageMaker modules) brings boto3 and
    # botocore, once per processor; never torch, the sagemaker SDK, matplotlib or pandas.
    assert set(parsed["pre_imported_heavy"]) <= {"boto3", "botocore"}
    assert parsed["max_active_runs"] == 1 and parsed["catchup"] is False


def test_params_have_the_documented_names_titles_and_types(parsed):
    names = {
        "source_bucket",
        "source_prefix",
        "file_list",
        "per_class_limit",
        "instance_type",
        "instance_count",
        "epochs",
        "batch_size",
        "lr",
        "model",
        "rules_mode",
        "fail_on_rules",
        "min_improvement",
        "max_runtime_s",
        "use_spot",
        "max_wait_s",
        "network_isolation",
    }
    assert names <= set(parsed["params"])
    for name in names:
        schema = parsed["schema"][name]
        assert schema.get("title"), f"{name} has no title"
        assert schema.get("type"), f"{name} has no type"
    assert parsed["params"]["instance_type"] == "ml.c5.xlarge"
    assert parsed["params"]["instance_count"] == 2
    assert parsed["schema"]["rules_mode"]["enum"] == [None, "auto", "managed", "self_hosted"]
    assert (parsed["params"]["use_spot"], parsed["params"]["network_isolation"]) == (False, False)


def test_params_that_are_also_deployment_settings_default_to_the_deployments_value(parsed):
    """An untouched form (or a scheduled run) must not override what the deployment set: these Params default to
    "not given" (None; the two switches to off, which a run may only turn on), and the settings then take the
    Airflow Variable, else the environment, else the default (Settings.from_sources)."""
    from inventory_pipeline.settings import DeploymentValues, Settings

    for name in ("source_bucket", "file_list", "rules_mode", "max_runtime_s", "max_wait_s"):
        assert parsed["params"][name] is None, name
    variables = {
        "INVENTORY_USE_SPOT": "true",
        "INVENTORY_MAX_RUNTIME_S": "7200",
        "INVENTORY_MAX_WAIT_S": "9000",
        "INVENTORY_SOURCE_BUCKET": "team-mirror",
        "INVENTORY_RULES_MODE": "managed",
        "INVENTORY_ENABLE_NETWORK_ISOLATION": "true",
    }
    settings = Settings.from_sources(parsed["params"], DeploymentValues(variables.get), declared=parsed["params"])
    assert (settings.use_spot, settings.max_runtime_s, settings.max_wait_s) == (True, 7200, 9000)
    assert (settings.source_bucket, settings.rules_mode, settings.enable_network_isolation) == (
        "team-mirror",
        "managed",
        True,
    )


def test_every_sensor_has_a_timeout_below_airflows_week(parsed):
    """A job or rule that never ends must fail its sensor in hours, not after Airflow's default of 7 days."""
    assert set(parsed["sensors"]) == {"wait_for_training", "wait_for_rules"}
    for task_id, sensor in parsed["sensors"].items():
        timeout = float(sensor["timeout"])
        assert 0 < timeout < 7 * 24 * 3600, f"{task_id} has timeout {timeout}"
        assert timeout > float(sensor["poke_interval"]), task_id


def test_the_form_offers_only_instance_types_sagemaker_can_train_on(parsed):
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    trainable = set(model.shape_for("TrainingInstanceType").enum)
    offered = set(parsed["schema"]["instance_type"]["enum"])
    assert offered <= trainable, sorted(offered - trainable)


def test_the_sagemaker_tasks_are_the_providers_operators_not_nested_ones(parsed):
    """Subclasses of the provider's operator and sensors (its style: thin operators over the hook), so Airflow
    runs them directly; nothing calls another operator's execute through Airflow's private safeguard."""
    provider = "airflow.providers.amazon.aws"
    assert f"{provider}.operators.sagemaker.SageMakerTrainingOperator" in parsed["bases"]["train"]
    assert f"{provider}.sensors.sagemaker.SageMakerTrainingSensor" in parsed["bases"]["wait_for_training"]
    assert f"{provider}.sensors.sagemaker.SageMakerBaseSensor" in parsed["bases"]["wait_for_rules"]
    package = ROOT / "plugins" / "inventory_pipeline"
    assert not [p.name for p in package.rglob("*.py") if "ExecutorSafeguard" in p.read_text()]


def test_the_runs_state_is_the_decisions_not_the_housekeepings_after_it(parsed):
    """The gate ends a blocked or failed run failed; storage_gc and stop_unwatched_job after it are teardowns,
    which Airflow leaves out of the run's state, so a successful housekeeping never turns a refused run green."""
    teardowns = ["stop_unwatched_job", "storage_gc"]
    assert parsed["leaves"] == teardowns and parsed["teardowns"] == teardowns
    assert parsed["trigger_rules"]["evaluate_and_promote"].lower().endswith("all_done")
