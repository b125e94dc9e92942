"""SageMaker's stop: SIGTERM, then a window (120 s on SageMaker) to save /opt/ml/model before SIGKILL.

StopTrainingJob and MaxRuntimeInSeconds both end a job this way, and SageMaker uploads whatever the job saved as
its model artifacts. The handler only sets a flag; the training loop asks `requested()` between batches (agreed
across hosts, so every DDP rank leaves at the same step), then train.py saves what it has and exits 0.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist


class StopSignal:
    def __init__(self) -> None:
        self._received = False

    def install(self) -> StopSignal:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self._received = True

    def requested(self, device: torch.device | None = None) -> bool:
        """Whether any host got SIGTERM (a collective when distributed: every rank must call it at each step)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self._received
        flag = torch.tensor([1 if self._received else 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
