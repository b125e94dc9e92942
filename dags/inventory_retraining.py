"""inventory_retraining: weekly retraining of the bin-object-counting model.

check_run_conf -> select_source -> copy_images -> split_dataset -> package_code -> check_lineage -> train
-> wait_for_training -> wait_for_rules -> parse_rule_reports -> review_promotion -> evaluate_and_promote

`check_lineage` skips the training job when data, code and training Params equal the champion's;
`review_promotion` asks a person (Airflow's human-in-the-loop) only where the policy says the numbers cannot
decide alone; `evaluate_and_promote` always runs and records exactly one decision per run (promoted,
not_better, below_baseline, blocked, failed or skipped_unchanged), in the project bucket and the MLflow
registry, and announces it.

Wiring only: each task is a few lines calling `inventory_pipeline.airflow.tasks`; nothing heavy is imported at
parse time. Only the Params below may be set per run (a conf with any other key is refused by
`check_run_conf`); deployment settings come from the environment or Airflow Variables. The same DAG runs
against AWS or the embedded local stack, depending only on where the `aws_default` connection points.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

# The Amazon provider's SageMaker modules (boto3 inside) are named here, as airflow.* imports, so the DAG
# processor pre-imports them once in its own process before forking each parse ([dag_processor]
# parsing_pre_import_modules): a parse pays only for this file and the subclasses in inventory_pipeline.
import airflow.providers.amazon.aws.operators.sagemaker  # noqa: F401
import airflow.providers.amazon.aws.sensors.sagemaker  # noqa: F401
import airflow.providers.standard.operators.hitl  # noqa: F401
from airflow.sdk import DAG, Param, task

from inventory_pipeline.airflow.callbacks import remember_failure
from inventory_pipeline.airflow.operators import (
    DecisionGateOperator,
    PromotionReviewOperator,
    RuleReportOperator,
    TrainingJobOperator,
)
from inventory_pipeline.airflow.sensors import RuleEvaluationSensor, TrainingJobSensor
from inventory_pipeline.rules.applicability import NEVER_EVALUATED
from inventory_pipeline.settings import KNOWN_MODELS, KNOWN_RULES, RULES_MODES

# The provider describes a job at most once per 30 s while printing its log; polls are no faster than that.
POKE_INTERVAL_S = float(os.environ.get("INVENTORY_POKE_INTERVAL_S", "60"))
# Reschedule mode frees the worker slot between polls; a reschedule only seconds away races the scheduler's
# own executor events (seen with LocalExecutor), so short local polls keep the slot instead.
SENSOR_MODE = "reschedule" if POKE_INTERVAL_S >= 30 else "poke"
PRINT_LOG = os.environ.get("INVENTORY_PRINT_LOG", "true").lower() == "true"
# A deployment that runs a triggerer (docker-compose does) sets this: the job and rule waits then defer.
DEFERRABLE = os.environ.get("INVENTORY_DEFERRABLE", "false").lower() == "true"
AWS_CONN_ID = os.environ.get("INVENTORY_AWS_CONN_ID", "aws_default")
SCHEDULE = os.environ.get("INVENTORY_SCHEDULE", "0 3 * * 1")

# The rules a run may fail on: every known rule that can ever be evaluated.
RULES = [rule for rule in KNOWN_RULES if rule not in NEVER_EVALUATED]
# Only SageMaker training instance types (there is no ml.c5.large for training: CreateTrainingJob refuses it).
INSTANCE_TYPES = [
    "ml.c5.xlarge",
    "ml.c5.2xlarge",
    "ml.c5.4xlarge",
    "ml.m5.large",
    "ml.m5.xlarge",
    "ml.m5.2xlarge",
    "ml.g4dn.xlarge",
    "ml.g4dn.2xlarge",
    "ml.g5.xlarge",
    "ml.p3.2xlarge",
]


def param(default: object, **schema: object) -> Param:
    """A Param whose schema names its JSON Schema dialect. Airflow validates every Param of every task each time
    it serializes the DAG, and jsonschema first checks the schema itself against its dialect's meta-schema: the
    default 2020-12 one is a tree of $refs (105 ms per serialization of this DAG here, 42 ms with draft-07).
    The keywords used below mean the same in both dialects."""
    return Param(default, **{"$schema": "http://json-schema.org/draft-07/schema#"}, **schema)


PARAMS = {
    # A Param left empty (None) takes the deployment's setting (INVENTORY_*: Airflow Variable, else environment,
    # else the default): the form's defaults never override what the deployment set (docs/settings.md).
    "source_bucket": param(
        None,
        type=["null", "string"],
        minLength=3,
        title="Source bucket",
        description="Bucket holding bin-images/<id>.jpg and metadata/<id>.json. Empty: the deployment's "
        "INVENTORY_SOURCE_BUCKET (default aft-vbi-pds).",
    ),
    # Optional fields accept null, which is also what makes the UI form treat them as not required.
    "source_prefix": param(
        "",
        type=["null", "string"],
        title="Source prefix",
        description="Key prefix before bin-images/ and metadata/ in the source bucket (usually empty).",
    ),
    "file_list": param(
        None,
        type=["null", "string"],
        title="File list",
        description="s3:// URI of a file_list.json ({'1': ['metadata/<id>.json', ...], ...}) in the source bucket "
        "(or a bucket the deployment allows). Empty: the deployment's INVENTORY_FILE_LIST, else list metadata/ "
        "and read EXPECTED_QUANTITY.",
    ),
    "per_class_limit": param(
        0,
        type="integer",
        minimum=0,
        title="Images per class",
        description="Take at most this many images per count (0 = all). Small values make quick runs.",
    ),
    "instance_type": param(
        "ml.c5.xlarge",
        type="string",
        enum=INSTANCE_TYPES,
        title="Instance type",
        description="SageMaker training instance type.",
    ),
    "instance_count": param(
        2,
        type="integer",
        minimum=1,
        maximum=20,
        title="Instance count",
        description="Training hosts (distributed data parallel).",
    ),
    "epochs": param(3, type="integer", minimum=1, maximum=1000, title="Epochs"),
    "batch_size": param(32, type="integer", minimum=1, maximum=4096, title="Batch size"),
    "lr": param(0.001, type="number", exclusiveMinimum=0, maximum=1, title="Learning rate"),
    "model": param(
        "resnet50",
        type="string",
        enum=list(KNOWN_MODELS),
        title="Model",
        description="resnet50 is the study's model; small_cnn is for quick synthetic runs.",
    ),
    "rules_mode": param(
        None,
        type=["null", "string"],
        enum=[None, *RULES_MODES],
        title="Rules mode",
        description="managed: SageMaker Debugger evaluates the rules. self_hosted: our rule engine does "
        "(for accounts without Debugger, closed to new customers since 2026-07-30). auto: managed unless "
        "SageMaker refuses Debugger rules for the account, then self_hosted. Empty: the deployment's "
        "INVENTORY_RULES_MODE (default auto).",
    ),
    "max_runtime_s": param(
        None,
        type=["null", "integer"],
        minimum=60,
        maximum=28 * 86400,
        title="Maximum runtime (s)",
        description="StoppingCondition.MaxRuntimeInSeconds: SageMaker stops the job after this much training. "
        "Empty: the deployment's INVENTORY_MAX_RUNTIME_S (default 3600).",
    ),
    "use_spot": param(
        False,
        type="boolean",
        title="Managed Spot training",
        description="Train on Spot capacity (cheaper; may be interrupted and resumed from per-epoch checkpoints). "
        "Off: the deployment's INVENTORY_USE_SPOT (a run can ask for Spot, not refuse the deployment's).",
    ),
    "max_wait_s": param(
        None,
        type=["null", "integer"],
        minimum=60,
        title="Spot: maximum wait (s)",
        description="MaxWaitTimeInSeconds: training plus waiting for Spot capacity; at least the maximum runtime. "
        "Empty: the deployment's INVENTORY_MAX_WAIT_S (default 14400).",
    ),
    "network_isolation": param(
        False,
        type="boolean",
        title="Network isolation",
        description="EnableNetworkIsolation: the training container has no network (inputs and outputs still "
        "move through SageMaker). Off: the deployment's INVENTORY_ENABLE_NETWORK_ISOLATION (a run can switch "
        "isolation on, never off).",
    ),
    "fail_on_rules": param(
        None,
        type=["null", "array"],
        items={"type": "string", "enum": RULES},
        examples=RULES,
        title="Fail on rules",
        description="Rules that block promotion and fail the run when they find issues, cannot be evaluated "
        "or leave no result; the others only warn. None given: the deployment's INVENTORY_REQUIRED_BLOCKING_RULES "
        "(a list given must include them). GPU rules need a GPU instance (refused otherwise).",
    ),
    "min_improvement": param(
        0.0,
        type="number",
        minimum=0,
        maximum=1,
        title="Minimum improvement",
        description="Accuracy gain over the champion (both scored on this run's test images) needed to promote.",
    ),
    "force_retrain": param(
        False,
        type="boolean",
        title="Force retraining",
        description="Train even when the data, the code and the training Params equal the champion's.",
    ),
}

with DAG(
    dag_id="inventory_retraining",
    description="Weekly retraining of the bin-object-counting model on SageMaker",
    # INVENTORY_SCHEDULE=none turns the weekly schedule off (manual triggers only).
    schedule=None if SCHEDULE.lower() in ("none", "off", "") else SCHEDULE,
    start_date=datetime(2026, 1, 5),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "on_failure_callback": remember_failure,  # the gate records why the run failed
    },
    tags=["ml", "sagemaker", "inventory"],
    render_template_as_native_obj=True,  # templated XCom values reach operators as dicts, not strings
    doc_md=__doc__,
) as dag:

    @task
    def check_run_conf(dag_run=None, dag=None, params=None) -> dict:
        from inventory_pipeline.airflow import tasks as dag_tasks

        # dag_run.conf itself for undeclared keys (Airflow merges them into params), then the Params' values.
        return dag_tasks.check_run_conf(dag_run.conf, frozenset(dag.params), params)

    @task
    def select_source(params=None) -> dict:
        from inventory_pipeline.airflow import tasks as dag_tasks

        with dag_tasks.failing_fast_on_bad_input():
            return dag_tasks.select_source(params)

    @task
    def copy_images(selection: dict, params=None) -> dict:
        from inventory_pipeline.airflow import tasks as dag_tasks

        with dag_tasks.failing_fast_on_bad_input():
            return dag_tasks.copy_images(params, selection)

    @task
    def split_dataset(copy_result: dict, params=None) -> dict:
        from inventory_pipeline.airflow import tasks as dag_tasks

        with dag_tasks.failing_fast_on_bad_input():
            return dag_tasks.split_dataset(params, copy_result)

    @task
    def package_code(params=None) -> dict:
        from inventory_pipeline.airflow import tasks as dag_tasks

        with dag_tasks.failing_fast_on_bad_input():
            return dag_tasks.package_code(params)

    @task
    def check_lineage(manifest: dict, code: dict, params=None) -> dict:
        from inventory_pipeline.airflow import tasks as dag_tasks

        with dag_tasks.failing_fast_on_bad_input():
            return dag_tasks.check_lineage(params, manifest, code)

    checked = check_run_conf()
    source = select_source()
    code = package_code()
    checked >> [source, code]
    dataset = split_dataset(copy_images(source))
    lineage = check_lineage(dataset, code)
    train = TrainingJobOperator(
        task_id="train",
        dataset=dataset,
        code=code,
        lineage=lineage,
        aws_conn_id=AWS_CONN_ID,
        retries=3,
        selection=source,  # the source's class counts: the prior the job corrects its answers to
    )
    job_name = "{{ ti.xcom_pull(task_ids='train')['Training']['TrainingJobName'] }}"
    wait_for_training = TrainingJobSensor(
        task_id="wait_for_training",
        job_name=job_name,
        aws_conn_id=AWS_CONN_ID,
        mode=SENSOR_MODE,
        poke_interval=POKE_INTERVAL_S,
        timeout=timedelta(hours=12),
        print_log=PRINT_LOG,
        deferrable=DEFERRABLE,
    )
    wait_for_rules = RuleEvaluationSensor(
        task_id="wait_for_rules",
        job_name=job_name,
        rules_mode="{{ ti.xcom_pull(task_ids='train', key='rules_mode') or params.rules_mode }}",
        aws_conn_id=AWS_CONN_ID,
        mode=SENSOR_MODE,
        poke_interval=POKE_INTERVAL_S,
        timeout=timedelta(hours=2),
        deferrable=DEFERRABLE,
    )
    parse_rule_reports = RuleReportOperator(
        task_id="parse_rule_reports",
        job_name=job_name,
        manifest=dataset,
        lineage=lineage,  # the champion whose dataset the class mix is compared with
        self_hosted="{{ ti.xcom_pull(task_ids='wait_for_rules') if (ti.xcom_pull(task_ids='train', key='rules_mode') "
        "or params.rules_mode) == 'self_hosted' else '' }}",
        retries=1,
    )

    # A person answers where the policy says the numbers cannot decide alone (skipped otherwise).
    review_promotion = PromotionReviewOperator(task_id="review_promotion")
    # Runs whatever happened upstream (a failed, blocked or skipped run still gets its decision).
    evaluate_and_promote = DecisionGateOperator(task_id="evaluate_and_promote")

    @task(retries=1)
    def storage_gc(params=None) -> dict:
        """Weekly: old dataset versions, staging leftovers and old debug tensors go (storage.gc)."""
        from inventory_pipeline.storage.task import run_gc

        return run_gc(params)

    @task(retries=3)
    def stop_unwatched_job(params=None, ti=None, dag=None, run_id=None) -> dict:
        """Teardown of train: this run's job, still running when the run is over, is stopped (no orphaned cost)."""
        from inventory_pipeline.airflow import tasks as dag_tasks

        return dag_tasks.stop_unwatched_job(params, ti, dag.dag_id, run_id)

    # Teardowns: they run whatever happened upstream, and the run's state stays the decision's (a blocked or
    # failed run must not read as a success because the housekeeping after it succeeded). Neither names `train` as
    # its setup: Airflow would then hold every task in that scope, the gate included, to the setup's success, and
    # a skipped or refused run must still get its decision.
    gc = storage_gc().as_teardown()
    stop_job = stop_unwatched_job().as_teardown()
    train >> wait_for_training >> wait_for_rules >> parse_rule_reports >> review_promotion >> evaluate_and_promote
    # Both also read train's XCom (the job's name): declared, a skipped train (an unchanged week) skips all three
    # in one scheduling pass instead of one pass, and one idle scheduler loop, per link of the chain.
    train >> [wait_for_rules, parse_rule_reports]
    evaluate_and_promote >> [stop_job, gc]
