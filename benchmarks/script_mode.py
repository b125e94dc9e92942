"""`training_code/train.py` run on this machine as SageMaker's container runs it: a subprocess with SM_* variables.

Shared by the benchmarks that time or score train.py itself (local_overhead, synthetic_quality, real_photos).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "training_code" / "train.py"


def script_env(channels: dict[str, Path], work: Path, hook_config: Path | None = None) -> dict[str, str]:
    """The SM_* environment for `channels` (train/valid/test, optionally pretrained), outputs under `work`;
    offline, and without a debugger hook unless `hook_config` is given."""
    return {
        **os.environ,
        **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()},
        "SM_MODEL_DIR": str(work / "model"),
        "SM_OUTPUT_DATA_DIR": str(work / "output"),
        "SM_OUTPUT_FAILURE": str(work / "failure"),
        "INVENTORY_OFFLINE": "1",
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        "SMDEBUG_CONFIG_FILE_PATH": str(hook_config or work / "no-hook.json"),
    }


def run_train(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN), *argv], env=env, capture_output=True, text=True)


def metrics(work: Path) -> dict:
    """metrics.json of a run whose outputs went under `work`."""
    return json.loads((work / "output" / "metrics.json").read_text())
