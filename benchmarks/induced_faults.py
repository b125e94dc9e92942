"""`training_code/train.py` with a training fault induced on purpose, for `rule_calibration.py`.

Run as the job's entry point would be (`python induced_faults.py --fault NAME <train.py arguments>`): the
same train.py, hook, data and outputs; only the network it builds is spoiled, the way the fault a debugger rule
is named for arises in practice. Overfit and Overtraining need no code change (tiny data, many epochs), so they
are induced by the arguments alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training_code"))

import train  # noqa: E402


class ScaledOutput(nn.Module):
    """A saturated output layer: the logits (and so every gradient behind them) shrunk by `scale`."""

    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale


def vanishing_gradient(net: nn.Module) -> nn.Module:
    return ScaledOutput(net, 1e-9)


def poor_weight_initialization(net: nn.Module) -> nn.Module:
    """Every convolution initialised 1000x too large: batch norm hides it from the forward pass, but each
    weight's gradient shrinks 1000-fold, so the network starts (and stays) almost frozen."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(1000.0)
    return net


FAULTS = {"vanishing_gradient": vanishing_gradient, "poor_weight_initialization": poor_weight_initialization}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--fault" or argv[1] not in FAULTS:
        raise SystemExit(f"usage: induced_faults.py --fault {{{','.join(FAULTS)}}} <train.py arguments>")
    spoil, build = FAULTS[argv[1]], train.build_model
    train.build_model = lambda *args, **kwargs: spoil(build(*args, **kwargs))
    return train.main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
