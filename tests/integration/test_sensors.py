"""The wait_for_training sensor against a real local job: in reschedule mode every poke is a new process
with a new sensor, and each job log line still reaches the task log once; killing or clearing the sensor
leaves the paid job running (only the train task's kill stops it)."""

from __future__ import annotations

import re
import time
import uuid
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs
from support import tar_archive

from inventory_pipeline.aws.clients import make_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CREDS = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}
LINES = 24
# Prints numbered lines over ~24 s, so several pokes (and a deferral) each see part of the log.
TICKER = f"import time\nfor i in range({LINES}):\n    print(f'tick-line {{i}}', flush=True)\n    time.sleep(1.0)\n"


@pytest.fixture(scope="module")
def start_job(local_stack):
    """Starts a local training job running TICKER; returns its name, clients and the run's params."""
    from inventory_pipeline.settings import Settings
    from inventory_pipeline.training.request import build_training_request

    s3 = make_client("s3", local_stack.endpoints["s3"], local_stack.region, **CREDS)
    sm = make_client("sagemaker", local_stack.endpoints["sagemaker"], local_stack.region, **CREDS)
    bucket = f"sensor-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/ticker.tar.gz", Body=tar_archive({"train.py": TICKER}))
    for channel in ("train", "valid", "test"):
        s3.put_object(Bucket=bucket, Key=f"data/{channel}/1/x.txt", Body=b"x")
    settings = Settings(bucket=bucket, model="small_cnn", instance_count=1)
    channels = {c: f"s3://{bucket}/data/{c}/" for c in ("train", "valid", "test")}
    params = {"bucket": bucket, "model": "small_cnn", "instance_count": 1}

    def start(run_id: str = "") -> SimpleNamespace:
        name = f"sensor-{uuid.uuid4().hex[:12]}"
        request = build_training_request(
            settings, name, channels, f"s3://{bucket}/code/ticker.tar.gz", run_id=run_id, dag_id="inventory_retraining"
        )
        sm.create_training_job(**request)
        return SimpleNamespace(name=name, sm=sm, s3=s3, bucket=bucket, params=params)

    return start


@pytest.fixture(scope="module")
def running_job(start_job):
    return start_job()


def _context(params: dict, try_number: int = 1) -> dict:
    return {"params": params, "ti": SimpleNamespace(task_id="wait_for_training", try_number=try_number)}


def test_killing_the_sensor_leaves_the_job_running(running_job, local_stack, monkeypatch):
    from inventory_pipeline.airflow.sensors import TrainingJobSensor

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", local_stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
    sensor = TrainingJobSensor(task_id="wait_for_training", job_name=running_job.name, print_log=False)
    assert sensor.poke(_context(running_job.params)) is False
    sensor.on_kill()  # what the task runner calls when the task is killed or cleared
    time.sleep(2)
    status = running_job.sm.describe_training_job(TrainingJobName=running_job.name)["TrainingJobStatus"]
    assert status == "InProgress"


def test_each_log_line_reaches_the_task_log_once_across_reschedules(running_job, local_stack, monkeypatch):
    from inventory_pipeline.airflow.sensors import TrainingJobSensor

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", local_stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
    messages: list[str] = []
    pokes, done, deadline = 0, False, time.monotonic() + 300
    while not done and time.monotonic() < deadline:
        # A reschedule poke is a new process: a new sensor, nothing carried over in memory.
        sensor = TrainingJobSensor(task_id="wait_for_training", job_name=running_job.name, print_log=True)
        with capture_logs() as captured:
            done = sensor.poke(_context(running_job.params))
        messages += [str(entry.get("event", "")) for entry in captured]
        pokes += 1
        time.sleep(1.5)
    ticks = _ticks(messages)
    assert done and pokes >= 3, (done, pokes)
    assert sorted(ticks, key=lambda m: int(m.split()[-1])) == [f"tick-line {i}" for i in range(LINES)], ticks


def test_the_wait_ends_at_the_first_poke_after_the_job_and_reads_its_log_to_the_end(
    start_job, local_stack, monkeypatch
):
    """With print_log the provider asks for the job's status at most every 30 s, whatever the poke interval, and
    reads the rest of the log one poke after it sees the end. Our sensor asks at every poke and reads the log
    to its end at once: a poke right after a status call still sees the job Completed, with every line."""
    from inventory_pipeline.airflow.sensors import TrainingJobSensor

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", local_stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
    job = start_job()
    sensor = TrainingJobSensor(task_id="wait_for_training", job_name=job.name, print_log=True)
    messages: list[str] = []
    with capture_logs() as captured:
        assert sensor.poke(_context(job.params)) is False  # running: the sensor starts tailing its log
    messages += [str(entry.get("event", "")) for entry in captured]
    assert _status(job, {"Completed"}) == "Completed"
    sensor.last_describe_job_call = time.monotonic()  # as if the status had just been asked for
    with capture_logs() as captured:
        assert sensor.poke(_context(job.params)) is True
    messages += [str(entry.get("event", "")) for entry in captured]
    assert _ticks(messages) == [f"tick-line {i}" for i in range(LINES)]


def _ticks(messages: list[str]) -> list[str]:
    return [m for m in messages if re.fullmatch(r"tick-line \d+", m)]


def test_a_deferred_wait_resumes_reading_the_log_where_it_stopped(start_job, local_stack, monkeypatch):
    """deferrable=True: the first poke prints what is there, the trigger waits (run here as the triggerer runs
    it: serialized, rebuilt, awaited), and the resumed task prints the rest of the log, each line once."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred
    from airflow.sdk.module_loading import import_string

    from inventory_pipeline.airflow.sensors import TrainingJobSensor

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", local_stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
    job = start_job()
    logs = make_client("logs", local_stack.endpoints["logs"], local_stack.region, **CREDS)

    def shipped_lines() -> int:
        streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=job.name)
        return sum(
            len(
                logs.get_log_events(
                    logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True
                )["events"]
            )
            for s in streams["logStreams"]
        )

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # let the job print part of its log before the first poke
        try:
            if shipped_lines() >= 1:
                break
        except logs.exceptions.ResourceNotFoundException:
            pass
        time.sleep(0.5)

    def sensor() -> TrainingJobSensor:
        return TrainingJobSensor(
            task_id="wait_for_training",
            job_name=job.name,
            print_log=True,
            deferrable=True,
            poke_interval=1,
            timeout=300,
        )

    with capture_logs() as before, pytest.raises(TaskDeferred) as deferred:
        sensor().execute(_context(job.params))
    classpath, kwargs = deferred.value.trigger.serialize()
    trigger = import_string(classpath)(**kwargs)

    async def first_event():
        async for event in trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=300))
    assert event.payload["status"] == "Completed"
    with capture_logs() as after:
        sensor().execute_complete(_context(job.params), event.payload)  # the resumed task: a new process
    first = _ticks([str(e.get("event", "")) for e in before])
    rest = _ticks([str(e.get("event", "")) for e in after])
    assert first and rest, (first, rest)
    assert first + rest == [f"tick-line {i}" for i in range(LINES)]


def _status(job: SimpleNamespace, want: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job.sm.describe_training_job(TrainingJobName=job.name)["TrainingJobStatus"]
        if status in want:
            return status
        time.sleep(0.5)
    return status


def test_the_teardown_stops_this_runs_job_when_nothing_waits_for_it(start_job, local_stack, monkeypatch):
    """The run is over (its wait timed out) and its job still runs: the teardown stops it; a finished job, or a
    job of another run with the same name's owner tags differing, is left alone."""
    from airflow.sdk.exceptions import AirflowFailException

    from inventory_pipeline.airflow.tasks import stop_unwatched_job
    from inventory_pipeline.training.ownership import ForeignJobError

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", local_stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
    job = start_job(run_id="run-orphaned")

    def ti(name: str) -> SimpleNamespace:
        return SimpleNamespace(
            xcom_pull=lambda task_ids: {"Training": {"TrainingJobName": name}},
            get_task_states=lambda dag_id, run_ids: {run_ids[0]: {"wait_for_training": "failed"}},
        )

    with pytest.raises((ForeignJobError, AirflowFailException)):  # another run's job: never stopped
        stop_unwatched_job(job.params, ti(job.name), "inventory_retraining", "run-someone-else")
    assert job.sm.describe_training_job(TrainingJobName=job.name)["TrainingJobStatus"] == "InProgress"
    result = stop_unwatched_job(job.params, ti(job.name), "inventory_retraining", "run-orphaned")
    assert result["stopped"] and result["wait_for_training"] == "failed", result
    assert _status(job, {"Stopped"}) == "Stopped"
    again = stop_unwatched_job(job.params, ti(job.name), "inventory_retraining", "run-orphaned")
    assert not again["stopped"] and again["status"] == "Stopped"  # a retry changes nothing
    assert stop_unwatched_job(job.params, SimpleNamespace(xcom_pull=lambda task_ids: None), "d", "r")["job"] is None


def test_a_deferred_wait_ends_at_its_deadline_and_a_killed_one_stops_its_job_when_told(
    start_job, local_stack, monkeypatch
):
    import asyncio

    from inventory_pipeline.airflow.triggers import TrainingJobTrigger

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", local_stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
    job = start_job()

    async def first_event(trigger: TrainingJobTrigger):
        async for event in trigger.run():
            return event

    past = TrainingJobTrigger(job_name=job.name, poll_interval_s=1, deadline=time.time() - 1)
    event = asyncio.run(asyncio.wait_for(first_event(past), timeout=60))
    assert event.payload["timed_out"] and event.payload["status"] == "InProgress"
    asyncio.run(TrainingJobTrigger(job_name=job.name, stop_job_on_kill=False).on_kill())
    assert job.sm.describe_training_job(TrainingJobName=job.name)["TrainingJobStatus"] == "InProgress"
    kwargs = TrainingJobTrigger(job_name=job.name, stop_job_on_kill=True).serialize()[1]
    asyncio.run(TrainingJobTrigger(**kwargs).on_kill())  # as the triggerer rebuilds it
    assert _status(job, {"Stopped"}) == "Stopped"
