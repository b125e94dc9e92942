"""train.py stopped as SageMaker stops a job (StopTrainingJob, MaxRuntimeInSeconds): SIGTERM, then a window to
save /opt/ml/model. It saves what it has and exits 0, on every host at the same step."""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest
from support import free_port, start_hosts
from test_train_script import TRAIN, sm_env, synthetic_channels  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


def test_sigterm_saves_the_model_and_exits_0_on_every_host(synthetic_channels, tmp_path):  # noqa: F811
    """Two hosts (DDP, gloo); only rank 1 gets SIGTERM: both must still leave at the same step (else rank 0
    would wait in the next all-reduce until SIGKILL), and rank 0 saves the model."""
    hosts = ("algo-1", "algo-2")
    extra = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    cmd = [
        sys.executable,
        str(TRAIN),
        "--model",
        "small_cnn",
        "--epochs",
        "200",
        "--batch-size",
        "8",
        "--num-workers",
        "0",
    ]
    procs = start_hosts(cmd, lambda h: sm_env(tmp_path, synthetic_channels, h, hosts, **extra), hosts)
    try:
        seen = []
        for line in procs[0].stdout:  # rank 0's log: wait for the first finished epoch
            seen.append(line)
            if line.startswith("epoch=1;"):
                break
        procs[1].send_signal(signal.SIGTERM)
        started = time.time()
        outputs = ["".join(seen) + procs[0].communicate(timeout=120)[0], procs[1].communicate(timeout=120)[0]]
    finally:
        for proc in procs:
            proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert time.time() - started < 60  # well inside SageMaker's 120 s window
    model = tmp_path / "algo-1" / "model"
    assert (model / "model.pth").stat().st_size > 0 and (model / "model_info.json").exists()
    metrics = json.loads((tmp_path / "algo-1/output/data/metrics.json").read_text())
    assert metrics["stopped"] is True and 1 <= metrics["epochs_run"] < 200
    assert metrics["best_epoch"] >= 1  # the best finished epoch's weights, not a half-trained step
    assert "SIGTERM: stopping after" in outputs[0]
    assert not (tmp_path / "algo-2" / "model" / "model.pth").exists()
