"""The wait_for_training sensor against a real local job: in reschedule mode every poke is a new process
with a new sensor, and each job log line still reaches the task log once; killing or clearing the sensor
leaves the paid job running (only the train task's kill stops it)."""

from __future__ import annotations

import io
import re
import tarfile
import time
import uuid
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from inventory_pipeline.aws_clients import make_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CREDS = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}
LINES = 24
# Prints numbered lines over ~12 s, so several pokes each see part of the log.
TICKER = f"import time\nfor i in range({LINES}):\n    print(f'tick-line {{i}}', flush=True)\n    time.sleep(0.5)\n"


def _tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def running_job(local_stack):
    from inventory_pipeline.settings import Settings
    from inventory_pipeline.training.request import build_training_request

    s3 = make_client("s3", local_stack.endpoints["s3"], local_stack.region, **CREDS)
    sm = make_client("sagemaker", local_stack.endpoints["sagemaker"], local_stack.region, **CREDS)
    bucket = f"sensor-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/ticker.tar.gz", Body=_tar({"train.py": TICKER}))
    for channel in ("train", "valid", "test"):
        s3.put_object(Bucket=bucket, Key=f"data/{channel}/1/x.txt", Body=b"x")
    settings = Settings(bucket=bucket, model="small_cnn", instance_count=1)
    name = f"sensor-{uuid.uuid4().hex[:12]}"
    channels = {c: f"s3://{bucket}/data/{c}/" for c in ("train", "valid", "test")}
    sm.create_training_job(**build_training_request(settings, name, channels, f"s3://{bucket}/code/ticker.tar.gz"))
    params = {"bucket": bucket, "model": "small_cnn", "instance_count": 1}
    return SimpleNamespace(name=name, sm=sm, s3=s3, bucket=bucket, params=params)


def _context(params: dict, try_number: int = 1) -> dict:
    return {"params": params, "ti": SimpleNamespace(task_id="wait_for_training", try_number=try_number)}


def test_killing_the_sensor_leaves_the_job_running(running_job, local_stack, monkeypatch):
    from inventory_pipeline.sensors import TrainingJobSensor

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", local_stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
    sensor = TrainingJobSensor(task_id="wait_for_training", job_name=running_job.name, print_log=False)
    assert sensor.poke(_context(running_job.params)) is False
    sensor.on_kill()  # what the task runner calls when the task is killed or cleared
    time.sleep(2)
    status = running_job.sm.describe_training_job(TrainingJobName=running_job.name)["TrainingJobStatus"]
    assert status == "InProgress"


def test_each_log_line_reaches_the_task_log_once_across_reschedules(running_job, local_stack, monkeypatch):
    from inventory_pipeline.sensors import TrainingJobSensor

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
    ticks = [m for m in messages if re.fullmatch(r"tick-line \d+", m)]
    assert done and pokes >= 3, (done, pokes)
    assert sorted(ticks, key=lambda m: int(m.split()[-1])) == [f"tick-line {i}" for i in range(LINES)], ticks
