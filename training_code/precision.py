"""Mixed precision (`--amp`): bfloat16 or float16 autocast for the training forward passes on a GPU.

"auto" (the default) uses bfloat16 for a training loop on a GPU that supports it (float16 with loss scaling on
older ones), and float32 on the CPU, where autocast is slower than float32 on most instances. Channels-last memory
goes with it on the GPU: tensor-core convolutions read NHWC without a transpose. A linear head's single feature
pass stays float32 under "auto": on an H200 (benchmarks/train_gpu.py) bfloat16 made EfficientNet-Lite0's forward
1.86x faster once warm, but the pass itself slower (137 vs 245 images/s on 960 photos; not profiled, likely the
new precision's first-batch kernel setup, which an epoch loop pays once).

Never under the debugger hook: smdebug saves tensors through numpy, which has no bfloat16, and float16 loss
scaling multiplies the gradients the rules read (vanishing_gradient would judge scaled values). With the hook on,
the job trains in float32 and says so; an explicit bf16/fp16 request then becomes a warning in the report.

The test evaluation always runs in float32, as inference.py serves the model, so the candidate and the champion
are compared on the same arithmetic.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch

log = logging.getLogger("train.precision")

AMP_CHOICES = ("auto", "off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    device_type: str
    dtype: torch.dtype | None = None  # None: float32
    channels_last: bool = False
    warning: str | None = None
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return next((name for name, dtype in _DTYPES.items() if dtype == self.dtype), "fp32")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward() + optimizer.step(), through the loss scaler under float16."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


FP32 = Precision("cpu")


def choose_precision(requested: str, device: torch.device, debugger_hook: bool, one_pass: bool = False) -> Precision:
    """`one_pass`: the job's only GPU work is one pass over the data (a linear head's features)."""
    if requested not in AMP_CHOICES:
        raise ValueError(f"--amp {requested!r}: choose one of {', '.join(AMP_CHOICES)}")
    if requested == "off" or (requested == "auto" and (device.type != "cuda" or one_pass)):
        if requested == "auto" and device.type == "cuda":
            log.info("precision float32: a single feature pass does not repay mixed precision's setup")
        return Precision(device.type)
    if debugger_hook:
        reason = (
            "the debugger hook is on: its tensors (numpy, no bfloat16) and the rules' gradients (float16 "
            "loss scaling) need float32"
        )
        if requested == "auto":
            log.info("precision float32: %s", reason)
            return Precision(device.type)
        warning = f"--amp {requested} ignored, trained in float32: {reason}"
        log.warning(warning)
        return Precision(device.type, warning=warning)
    if requested == "auto":
        requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = _DTYPES[requested]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    precision = Precision(device.type, dtype, channels_last=device.type == "cuda", scaler=scaler)
    log.info(
        "precision %s autocast on %s%s",
        precision.name,
        device.type,
        ", channels-last" if precision.channels_last else "",
    )
    return precision
