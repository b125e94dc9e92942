"""The debugger rules' parameters for one training schedule, chosen from `benchmarks/rule_calibration.py`.

SageMaker's defaults judge single batches: Overtraining wants a new lowest per-batch training loss within 5
steps, and Overfit flags a single evaluation whose loss is 10 % above the training loss. On healthy runs of our
recipes both fire (measured: on every healthy run of the benchmark): a 32-photo batch's loss is noise around
the trend, and while a one-cycle learning rate is at its peak the validation loss of a network with batch norm
jumps for an epoch or two. The rules keep their SageMaker names, semantics and documented parameters; only the values
are scaled to the schedule, so SageMaker's managed rules read the request exactly as our engine does.

- Overfit: validation more than 25 % above training for a quarter of the epochs in a row (at least one),
  counted from the end of the first third of the run (past the one-cycle peak). Measured: healthy runs stay
  below that (at most 2 such epochs in a row, all in the first half); memorised data stays above it for
  tens of epochs.
- Overtraining: no new lowest training loss (by `delta`) for 5 epochs' worth of steps, or no better
  validation loss for 10 evaluations (SageMaker's default). Measured: a healthy run's longest wait for a new
  lowest batch loss is 2 epochs (at the end of a one-cycle run); a run trained far past convergence waits 8+.
- PoorWeightInitialization: SageMaker's thresholds for the activation and gradient checks; its loss check
  ("no new lowest batch loss for `patience` of the first `steps` training steps") is turned off (patience =
  steps: the first step always sets the lowest, so it cannot fire). Measured: on the same healthy recipes (a
  frozen backbone at a low learning rate, the DAG tests' one-cycle warm-up) it fired in some runs and not in
  others: their first batches' losses are noise around a flat start, and on pure noise it fires 64 % of the
  time. The faults it is meant for show in the gradients at step 0, which the other check reads. The rule's
  summary says the loss check is off.
- VanishingGradient: SageMaker's default, quiet on every healthy run measured and firing on every induced fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OVERFIT_RATIO = 0.25
OVERFIT_SKIP_SHARE = 1 / 3  # of the epochs: the one-cycle peak and its batch-norm jumps come before this
OVERFIT_PATIENCE_SHARE = 1 / 4  # of the epochs, at least one evaluation
OVERTRAINING_TRAIN_EPOCHS = 5
OVERTRAINING_VALIDATION_PATIENCE = 10
OVERTRAINING_DELTA = 0.01
# Recorded in a self_hosted job's Environment (SageMaker gets no rule configuration there) so the evaluation
# after the job uses the parameters the request was built with: "<epochs>,<train steps>,<eval steps>".
SCHEDULE_ENV = "INVENTORY_RULE_SCHEDULE"


@dataclass(frozen=True)
class Schedule:
    """What the rules will see: epochs, and per epoch the training steps of one worker and the evaluation
    steps (every worker evaluates the whole valid channel)."""

    epochs: int
    train_steps: int
    eval_steps: int

    @classmethod
    def for_data(
        cls, epochs: int, batch_size: int, instance_count: int, train_images: int, valid_images: int
    ) -> Schedule:
        per_worker = math.ceil(train_images / max(1, instance_count))  # DistributedSampler pads to equal shares
        return cls(
            epochs=max(1, epochs),
            train_steps=max(1, math.ceil(per_worker / batch_size)),
            eval_steps=max(1, math.ceil(valid_images / batch_size)),
        )

    def encode(self) -> str:
        return f"{self.epochs},{self.train_steps},{self.eval_steps}"

    @classmethod
    def decode(cls, text: str | None) -> Schedule | None:
        try:
            epochs, train_steps, eval_steps = (int(part) for part in (text or "").split(","))
        except ValueError:
            return None
        return cls(epochs, train_steps, eval_steps)


def debugger_rule_parameters(schedule: Schedule | None) -> dict[str, dict[str, str]]:
    """RuleParameters (strings, as the API carries them) for each debugger rule. Without a schedule (the
    dataset's size unknown) Overfit and Overtraining keep SageMaker's defaults."""
    poor_initialization = {
        "activation_inputs_regex": ".*relu_input",
        "threshold": "10.0",
        "distribution_range": "0.001",
    }
    parameters: dict[str, dict[str, str]] = {
        "VanishingGradient": {"threshold": "1e-07"},
        "PoorWeightInitialization": {**poor_initialization, "patience": "10", "steps": "10"},  # loss check off
    }
    if schedule is None:
        return parameters
    skipped_epochs = math.floor(schedule.epochs * OVERFIT_SKIP_SHARE)
    parameters["Overfit"] = {
        "start_step": str(skipped_epochs * (schedule.train_steps + schedule.eval_steps)),
        "patience": str(max(1, round(schedule.epochs * OVERFIT_PATIENCE_SHARE))),
        "ratio_threshold": str(OVERFIT_RATIO),
    }
    parameters["Overtraining"] = {
        "patience_train": str(max(5, OVERTRAINING_TRAIN_EPOCHS * schedule.train_steps)),
        "patience_validation": str(OVERTRAINING_VALIDATION_PATIENCE),
        "delta": str(OVERTRAINING_DELTA),
    }
    return parameters
