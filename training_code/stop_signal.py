"""SageMaker's stop: SIGTERM, then a window (120 s on SageMaker) to save /opt/ml/model before SIGKILL.

StopTrainingJob, MaxRuntimeInSeconds and a Managed Spot interruption all end a job this way, and SageMaker uploads
whatever the job saved as its model artifacts. The handler only sets a flag (raising from it would leave the other
DDP ranks waiting in their next all-reduce until SIGKILL); the training loop asks `requested()` between batches,
agreed across hosts, so every rank leaves at the same step, then train.py saves what it has and exits 0.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist


class StopSignal:
    def __init__(self) -> None:
        self._received = False
        self._previous: object = None

    def install(self) -> StopSignal:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread (a caller embedding train()): nothing to install
            pass
        return self

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self._received = True

    @property
    def received(self) -> bool:
        """Whether this host got SIGTERM (local, no collective)."""
        return self._received

    def requested(self, device: torch.device | None = None) -> bool:
        """Whether any host got SIGTERM (a collective when distributed: every rank must call it at each step)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self._received
        flag = torch.tensor([1 if self._received else 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
