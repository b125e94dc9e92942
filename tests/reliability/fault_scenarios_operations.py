"""Day-2 operations as faults (issue 25): people clear, re-run and roll back; MLflow goes down, answers 5xx or 403;
gates overlap; announcements fail; a wait times out with its job still running. Each scenario ends in the right
decision, with nothing lost, duplicated, contradictory or left running. Registered into `fault_scenarios.SCENARIOS`
(imported at the end of that module), so `test_faults.py` and `benchmarks/faults.py` run them with the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from fault_proxy import DROP, RESPOND, Action, FaultProxy
from fault_scenarios import (
    DAG_ID,
    ROOT_PREFIX,
    Audit,
    Died,
    FaultEnv,
    Row,
    _better_job,
    _set_env,
    context,
    job_name,
    registry_for,
    run_gate_for,
    scenario,
    seed_champion,
    settled,
    stop_quietly,
    train_operator,
)

# --- MLflow down, 5xx or 403, at each point the pipeline asks it ---------------------------------------------

MLFLOW_FAULTS: dict[str, Callable[[], Action]] = {
    "down": lambda: Action(DROP),
    "5xx": lambda: Action(
        RESPOND,
        503,
        "Service Unavailable",
        json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "restarting"}).encode(),
        "application/json",
    ),
    "403": lambda: Action(
        RESPOND,
        403,
        "Forbidden",
        json.dumps({"error_code": "PERMISSION_DENIED", "message": "not authorized"}).encode(),
        "application/json",
    ),
}
MLFLOW_POINTS = ("check_lineage", "the gate before deciding", "the gate after the decision write")


@contextlib.contextmanager
def mlflow_behind_proxy(env: FaultEnv) -> Iterator[FaultProxy]:
    """A proxy in front of the stack's MLflow, with MLflow's client retries off (a fault answers at once)."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    _set_env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    _set_env("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        with FaultProxy(env.stack.endpoints["mlflow"]) as proxy:
            yield proxy
    finally:
        for name, value in saved.items():
            _set_env(name, value)


def _registry(url: str, bucket: str) -> Any:
    from inventory_pipeline.decision.registry import Registry

    return Registry(url, f"counting-{bucket}")


def _mlflow_fault(env: FaultEnv, kind: str, point: str) -> Row:
    """MLflow fails (`kind`) at `point`: the task fails (Airflow retries it) and nothing is decided on "could not
    ask"; once MLflow answers again, the retry makes the right decision against the real champion."""
    fault = f"MLflow {kind} at {point}"
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.bucket)
    before = seed_champion(env, names.bucket, accuracy=0.5)
    job = "fault-mlflow-job"
    run = _better_job(env, names, job, 0.8, 0.5)
    audit = Audit(env, fault)
    with mlflow_behind_proxy(env) as proxy:
        registry = _registry(proxy.url, names.bucket)
        failing = MLFLOW_FAULTS[kind]
        if point == "check_lineage":
            proxy.rule = lambda request: failing()
            refused, error = _raises(lambda: (registry.champion(), registry.versions()))
            proxy.rule = None
            champion = registry.champion()
            handled = refused and champion is not None and champion.tags.get("job") == "champion-before"
            decision = {"status": "-", "reason": f"check_lineage raised ({error}); then read v{champion.version}"}
        else:

            def fail_after_decision(step: str) -> None:
                if step == "decision":
                    proxy.rule = lambda request: failing()

            if point == "the gate before deciding":
                proxy.rule = lambda request: failing()
            first = _raises(
                lambda: run_gate_for(
                    env, names.bucket, job, names.run_id, **run, registry=registry, checkpoint=fail_after_decision
                )
            )
            recorded = _decision(env, names.bucket, job)
            proxy.rule = None
            decision = run_gate_for(env, names.bucket, job, names.run_id, **run, registry=registry)
            nothing_on_could_not_ask = recorded is None if point == "the gate before deciding" else True
            handled = first[0] and nothing_on_could_not_ask and decision["status"] == "promoted"
            if recorded is not None and recorded["status"] != "promoted":
                audit.problems.append(f"decided {recorded['status']} while MLflow could not be asked")
    audit.champion(names.bucket, before)
    _one_version_per_job(env, names.bucket, audit)
    return audit.row(f"{decision['status']}: {decision['reason'][:120]}", handled, f"first try: {kind} refused")


def _raises(fn: Callable[[], Any]) -> tuple[bool, str]:
    try:
        fn()
    except Exception as exc:  # RegistryUnavailable, an MlflowException, Died: the task fails (and is retried)
        return True, f"{type(exc).__name__}: {str(exc)[:80]}"
    return False, "no error"


def _decision(env: FaultEnv, bucket: str, job: str) -> dict[str, Any] | None:
    from inventory_pipeline.decision.store import DecisionStore

    return DecisionStore(env.s3, bucket, ROOT_PREFIX).read(job)


def _one_version_per_job(env: FaultEnv, bucket: str, audit: Audit) -> list[str]:
    jobs = [v.tags.get("job") for v in registry_for(env, bucket).versions()]
    audit.duplicated += len(jobs) - len(set(jobs))
    return jobs


def _register_mlflow_faults() -> None:
    for kind in MLFLOW_FAULTS:
        for point in MLFLOW_POINTS:
            scenario(f"MLflow {kind} at {point}")(lambda env, kind=kind, point=point: _mlflow_fault(env, kind, point))


_register_mlflow_faults()


# --- people acting between the gate's steps ------------------------------------------------------------------


@scenario("rollback between decide and apply")
def rollback_between_decide_and_apply(env: FaultEnv) -> Row:
    """B is decided `promoted` against A, the gate dies before the alias, someone rolls back to the first
    champion (and releases the hold): B's retry must not undo the rollback."""
    from inventory_pipeline.cli.model import release, rollback

    fault = "rollback between decide and apply"
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.bucket)
    seed_champion(env, names.bucket, accuracy=0.5)
    registry = registry_for(env, names.bucket)
    first = run_gate_for(env, names.bucket, "fault-a", names.run_id, **_better_job(env, names, "fault-a", 0.8, 0.5))
    run_b = _better_job(env, names, "fault-b", 0.9, 0.8)

    def die(step: str) -> None:
        if step == "registry":
            raise Died(step)

    died = _raises(lambda: run_gate_for(env, names.bucket, "fault-b", f"{names.run_id}-b", **run_b, checkpoint=die))
    rollback(env.s3, names.bucket, ROOT_PREFIX, registry, "1", who="oncall")
    release(env.s3, names.bucket, ROOT_PREFIX, registry, who="oncall")
    retried = run_gate_for(env, names.bucket, "fault-b", f"{names.run_id}-b", **run_b)
    audit = Audit(env, fault)
    _champion_is(env, names.bucket, "1", audit)
    _one_version_per_job(env, names.bucket, audit)
    handled = died[0] and first["status"] == "promoted" and retried["status"] == "superseded"
    return audit.row(f"{retried['status']}: {retried['reason'][-110:]}", handled)


@scenario("a stale decision applied late")
def stale_decision_applied_late(env: FaultEnv) -> Row:
    """An old run's gate recorded `promoted` and died before applying; weeks later another run promoted a newer
    model; clearing the old gate must not put the old candidate over the current champion."""
    fault = "a stale decision applied late"
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.bucket)
    seed_champion(env, names.bucket, accuracy=0.5)
    old = _better_job(env, names, "fault-old", 0.7, 0.5)

    def die(step: str) -> None:
        if step == "decision":
            raise Died(step)

    died = _raises(lambda: run_gate_for(env, names.bucket, "fault-old", f"{names.run_id}-old", **old, checkpoint=die))
    newer = run_gate_for(
        env, names.bucket, "fault-new", f"{names.run_id}-new", **_better_job(env, names, "fault-new", 0.9, 0.5)
    )
    late = run_gate_for(env, names.bucket, "fault-old", f"{names.run_id}-old", **old)
    audit = Audit(env, fault)
    champion = _champion_is(env, names.bucket, None, audit)
    _one_version_per_job(env, names.bucket, audit)
    handled = died[0] and newer["status"] == "promoted" and late["status"] == "superseded"
    handled = handled and champion is not None and champion.tags.get("job") == "fault-new"
    return audit.row(f"{late['status']}: {late['reason'][-110:]}", handled)


def _champion_is(env: FaultEnv, bucket: str, version: str | None, audit: Audit) -> Any:
    """The registry's champion (checked against `version` when given) and the deployable copy agree."""
    from inventory_pipeline.decision.decide import read_json

    champion = registry_for(env, bucket).champion()
    copy = read_json(env.s3, bucket, f"{ROOT_PREFIX}models/champion/metrics.json") or {}
    if version is not None and (champion is None or champion.version != version):
        audit.problems.append(f"the champion is v{champion.version if champion else None}, expected v{version}")
    if champion is not None and copy.get("version") != champion.version:
        audit.problems.append(f"models/champion/ holds v{copy.get('version')}, the registry v{champion.version}")
    return champion


@scenario("two gate attempts at once")
def two_gates_at_once(env: FaultEnv) -> Row:
    """A zombie try and its retry run the same gate concurrently: one MLflow run, one registry version."""
    fault = "two gate attempts at once"
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.bucket)
    before = seed_champion(env, names.bucket, accuracy=0.5)
    run = _better_job(env, names, "fault-twice", 0.8, 0.5)
    results: list[dict[str, Any]] = []
    errors: list[str] = []

    def attempt() -> None:
        try:
            results.append(run_gate_for(env, names.bucket, "fault-twice", names.run_id, **run))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    audit = Audit(env, fault)
    audit.champion(names.bucket, before)
    _one_version_per_job(env, names.bucket, audit)
    registry = registry_for(env, names.bucket)
    runs = registry.client.search_runs([registry._experiment_id()], filter_string="tags.job = 'fault-twice'")
    audit.duplicated += max(0, len(runs) - 1)
    statuses = [r["status"] for r in results]
    return audit.row(
        f"both attempts: {statuses}; {len(runs)} MLflow run(s)", statuses == ["promoted"] * 2, "; ".join(errors)
    )


@scenario("an unsent announcement")
def unsent_announcement(env: FaultEnv) -> Row:
    """SNS refused one week's announcement; the next week's gate sends it, and its own, each once with an id."""
    fault = "an unsent announcement"
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.bucket)
    seed_champion(env, names.bucket, accuracy=0.5)

    def sns_down(message_id: str, record: dict[str, Any]) -> None:
        raise ConnectionError("SNS is down")

    sent: list[str] = []
    week1 = _better_job(env, names, "fault-week-1", 0.8, 0.5)
    run_gate_for(env, names.bucket, "fault-week-1", f"{names.run_id}-1", **week1, notify=sns_down)
    week2 = _better_job(env, names, "fault-week-2", 0.6, 0.8)
    for _ in range(2):  # the gate and its retry
        run_gate_for(
            env,
            names.bucket,
            "fault-week-2",
            f"{names.run_id}-2",
            **week2,
            notify=lambda message_id, record: sent.append(message_id),
        )
    audit = Audit(env, fault)
    audit.duplicated += len(sent) - len(set(sent))
    audit.lost += len({"fault-week-1", "fault-week-2"} - set(sent))
    return audit.row(f"announced {sent}", sent == ["fault-week-1", "fault-week-2"])


@scenario("clear after a failed decision")
def clear_after_failed_decision(env: FaultEnv) -> Row:
    """copy_images failed (S3 outage) and the gate recorded `failed`; the engineer fixed it and cleared the run;
    the job trained: the gate decides again, and the history keeps both."""
    from inventory_pipeline.decision.store import DecisionStore

    fault = "clear after a failed decision"
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.bucket)
    before = seed_champion(env, names.bucket, accuracy=0.5)
    job = job_name(names.run_id)
    run = _better_job(env, names, job, 0.8, 0.5)
    outage = {"copy_images": "failed", "split_dataset": "upstream_failed", "train": "upstream_failed"}
    failed = run_gate_for(env, names.bucket, job, names.run_id, **{**run, "report": None}, states=outage)
    cleared = run_gate_for(env, names.bucket, job, names.run_id, **run)
    replay = run_gate_for(env, names.bucket, job, names.run_id, **run)
    audit = Audit(env, fault)
    audit.champion(names.bucket, before)
    history = [r["status"] for r in DecisionStore(env.s3, names.bucket, ROOT_PREFIX).all() if r["job"] == job]
    handled = (failed["status"], cleared["status"], replay["status"]) == ("failed", "promoted", "promoted")
    return audit.row(
        f"failed, then {cleared['status']} (attempt {cleared.get('attempt')}); history {history}",
        handled and history == ["failed", "promoted"],
    )


# --- paid work nobody waits for ------------------------------------------------------------------------------


@scenario("a sensor timeout with the job running")
def sensor_timeout_job_running(env: FaultEnv) -> Row:
    """wait_for_training gives up while the job still runs: the run's teardown stops that job (and only it)."""
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from inventory_pipeline.airflow import sensors
    from inventory_pipeline.airflow.tasks import stop_unwatched_job

    fault = "a sensor timeout with the job running"
    names = env.names(fault)
    params, shared = env.train_params(), env.shared()
    name = job_name(names.run_id)
    audit = Audit(env, fault)
    fitted = sensors.job_wait_timeout_s
    try:
        with env.connection():
            train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
            sensors.job_wait_timeout_s = lambda description: 2  # the job's limit, as if it had run out
            sensor = sensors.TrainingJobSensor(
                task_id="wait_for_training", job_name=name, print_log=False, mode="poke", poke_interval=0.5
            )
            timed_out = _raises_kind(lambda: sensor.execute(context(names.run_id, params)), AirflowSensorTimeout)
            ti = type(
                "TI",
                (),
                {
                    "xcom_pull": staticmethod(lambda task_ids: {"Training": {"TrainingJobName": name}}),
                    "get_task_states": staticmethod(
                        lambda dag_id, run_ids: {run_ids[0]: {"wait_for_training": "failed"}}
                    ),
                },
            )
            stopped = stop_unwatched_job(params, ti, DAG_ID, names.run_id)
        audit.jobs(name)
    finally:
        sensors.job_wait_timeout_s = fitted
        stop_quietly(env.sm, name)
    final = settled(env.sm, name, 120)
    audit.job_state(final)
    return audit.row(
        f"timed out, teardown stopped it: job {final['TrainingJobStatus']}",
        timed_out and stopped["stopped"] and final["TrainingJobStatus"] == "Stopped",
    )


def _raises_kind(fn: Callable[[], Any], kind: type[BaseException]) -> bool:
    try:
        fn()
    except kind:
        return True
    return False


@scenario("train cleared after its job failed")
def train_cleared_after_failed_job(env: FaultEnv) -> Row:
    """The run's job ended Stopped; the engineer clears train: a new job (attempt 2, same ownership tags) starts,
    and clearing again while it runs re-attaches to it instead of starting a third."""
    from inventory_pipeline.training.naming import job_name_for_run
    from inventory_pipeline.training.ownership import expected_from, list_job_tags

    fault = "train cleared after its job failed"
    names = env.names(fault)
    params, shared = env.train_params(), env.shared()
    first, second = job_name_for_run(DAG_ID, names.run_id), job_name_for_run(DAG_ID, names.run_id, attempt=2)
    audit = Audit(env, fault)
    try:
        with env.connection():
            train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
            env.sm.stop_training_job(TrainingJobName=first)
            settled(env.sm, first, 120)
            cleared = train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
            again = train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
        audit.jobs(first)
        audit.jobs(second)
        tags = [
            expected_from(list_job_tags(env.sm, env.sm.describe_training_job(TrainingJobName=n)["TrainingJobArn"]))
            for n in (first, second)
        ]
    finally:
        stop_quietly(env.sm, second)
    started = cleared["Training"]["TrainingJobName"]
    handled = started == second and again["Training"]["TrainingJobName"] == second and tags[0] == tags[1]
    return audit.row(f"cleared train started {started}, re-attached to it after", handled)
