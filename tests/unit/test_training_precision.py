"""training_code/precision.py: when mixed precision is used, and that the debugger's tensors never pass through it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training_code"))

from precision import choose_precision  # noqa: E402

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_float32_on_the_cpu_and_for_a_single_feature_pass():
    assert choose_precision("auto", CPU, debugger_hook=False).name == "fp32"
    one_pass = choose_precision("auto", CUDA, debugger_hook=False, one_pass=True)
    assert one_pass.name == "fp32" and not one_pass.channels_last and one_pass.warning is None


def test_the_debugger_hook_keeps_float32_and_an_explicit_request_becomes_a_warning():
    quiet = choose_precision("auto", CUDA, debugger_hook=True)
    assert quiet.name == "fp32" and quiet.warning is None
    for asked in ("bf16", "fp16"):
        refused = choose_precision(asked, CUDA, debugger_hook=True)
        assert refused.name == "fp32" and refused.scaler is None
        assert f"--amp {asked} ignored" in refused.warning and "debugger hook" in refused.warning


def test_an_explicit_bf16_on_the_cpu_autocasts_the_forward_pass_only():
    precision = choose_precision("bf16", CPU, debugger_hook=False)
    assert precision.name == "bf16" and not precision.channels_last and precision.scaler is None
    layer = torch.nn.Linear(4, 3)
    with precision.autocast():
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32


def test_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="choose one of auto, off, bf16, fp16"):
        choose_precision("tf32", CPU, debugger_hook=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_on_a_gpu_autocasts_the_training_loop():
    precision = choose_precision("auto", CUDA, debugger_hook=False)
    assert precision.name in ("bf16", "fp16") and precision.channels_last
