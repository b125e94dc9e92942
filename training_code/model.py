"""The networks `train.py` can train, by name, and how their pretrained weights are loaded.

- resnet50: the study's model: frozen ImageNet backbone, head Linear(2048,128)-ReLU-Linear(128,5).
- resnet18: the same recipe on a smaller backbone.
- efficientnet_lite0: EfficientNet-Lite0 (no squeeze-excitation, ReLU6, TF "same" padding), built here so the
  code ships alone; its key names match the ImageNet checkpoint `efficientnet-lite0-57934424.pth`.
- small_cnn: a few conv blocks, trained from scratch; for quick synthetic runs and the demo.

Pretrained weights come from a checkpoint file when one is given (the `pretrained` channel; no network), else
by name from torchvision (the real download path, used on SageMaker), else not at all.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 5
IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128.
LITE_NORM = {"mean": [0.498, 0.498, 0.498], "std": [0.502, 0.502, 0.502]}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_size: int
    resize: int
    normalization: dict
    pretrained_by_default: bool
    # "study": the study's augmentations (pretrained backbones); "light": flips (and a mild crop in the crop
    # view), for a network trained from scratch on a few hundred images, where colour/rotation noise slows it.
    augmentation: str = "study"
    # "crop": the study's resize + centre crop; "full": the whole bin scaled to input_size x input_size. A centre
    # crop of a wide bin photo cuts items at its sides out of the picture while the label still counts them.
    view: str = "crop"
    # "onecycle" (warm-up, then annealing to ~0) for a network trained from scratch: a constant Adam rate left
    # small_cnn's validation accuracy jumping by 0.3 between epochs; "constant" is the study's.
    lr_schedule: str = "constant"
    # "mlp": Linear-ReLU-Linear trained by Adam over epochs (the study's); "linear": one linear layer fitted in
    # closed form on the frozen backbone's features, its L2 strength chosen by cross-validation on the train
    # channel (linear_head.py); "ordinal": one linear layer too, a ridge regression of the count answered by the
    # nearest count (ordinal_head.py). Not for a network trained from scratch (small_cnn keeps its own classifier).
    head: str = "mlp"
    # Test-time augmentation: "none", or "hflip" (the mean of the outputs on the photo and its mirror image).
    tta: str = "none"


SPECS = {
    # The study's models keep the study's transforms exactly.
    "resnet50": ModelSpec("resnet50", 224, 256, IMAGENET_NORM, True),
    "resnet18": ModelSpec("resnet18", 224, 256, IMAGENET_NORM, True),
    # Chosen by nested cross-validation on the 100 real photos scored at the study's class mix
    # (benchmarks/real_photos.py; every choice made on the training folds only, at that mix): the ordinal head
    # (a ridge regression of the count, answered by the nearest count) fitted on frozen features, the whole bin at
    # 416 px, no TTA; chosen in 2 of the 5 folds (ordinal heads in 4) and by the same selection on all 100 photos,
    # among both heads x 224/320/416 px whole bin and the 224 px centre crop x with and without flip TTA. An MLP
    # head trained by Adam over epochs scored 0.20 on 266 unseen photos.
    "efficientnet_lite0": ModelSpec("efficientnet_lite0", 416, 416, LITE_NORM, True, view="full", head="ordinal"),
    # Synthetic data (benchmarks/synthetic_quality.py): centre crop 0.76 test accuracy after 20 epochs, the whole
    # bin 0.93, and 0.97 after 15 epochs with onecycle.
    "small_cnn": ModelSpec(
        "small_cnn", 96, 96, IMAGENET_NORM, False, augmentation="light", view="full", lr_schedule="onecycle"
    ),
}
LR_SCHEDULES = ("constant", "onecycle")
HEADS = ("mlp", "linear", "ordinal")
# Heads fitted in closed form on frozen features (one feature pass, no epochs), each one nn.Linear(width, 5).
FEATURE_HEADS = ("linear", "ordinal")
# Pretrained weights torchvision can download by name (efficientnet_lite0's come only from a checkpoint).
DOWNLOADABLE = {"resnet50": "IMAGENET1K_V1", "resnet18": "IMAGENET1K_V1"}
TTAS = ("none", "hflip")


def spec_for(name: str) -> ModelSpec:
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(SPECS)}")
    return SPECS[name]


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers: dict[str, nn.Module] = {}
        channels = [3, 24, 48, 96, 160]
        for i, (cin, cout) in enumerate(zip(channels, channels[1:], strict=False), start=1):
            layers[f"block{i}_conv"] = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            layers[f"block{i}_bn"] = nn.BatchNorm2d(cout)
            # Named "..._relu" so SageMaker's relu_input collection (regex .*relu_input) captures its inputs.
            layers[f"block{i}_relu"] = nn.ReLU()
            layers[f"block{i}_pool"] = nn.MaxPool2d(2)
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)))


# --- EfficientNet-Lite0 ---------------------------------------------------------------------------------


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, as the checkpoint was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


# (expand ratio, kernel, stride, output channels, repeats) per stage, from the EfficientNet-Lite0 definition.
_LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


# --- construction -----------------------------------------------------------------------------------------


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file, refusing anything that is not plain tensors (no pickled code)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    return state


def find_checkpoint(channel_dir: Path | None, model_name: str) -> Path | None:
    """The checkpoint file in the `pretrained` channel (a single .pth/.pt, or one named after the model)."""
    if channel_dir is None or not Path(channel_dir).is_dir():
        return None
    files = sorted(p for p in Path(channel_dir).rglob("*") if p.suffix in (".pth", ".pt") and p.is_file())
    named = [p for p in files if model_name.replace("_", "-") in p.name or model_name in p.name]
    if named:
        return named[0]
    if len(files) == 1:
        return files[0]
    if files:
        raise ValueError(f"several checkpoints in {channel_dir} and none named after {model_name}: {files}")
    return None


def _backbone(name: str, checkpoint: Path | None, download: bool) -> nn.Module:
    import torchvision

    if name == "efficientnet_lite0":
        net = EfficientNetLite0()
        if checkpoint:
            net.load_state_dict(load_checkpoint(checkpoint))
        return net
    builder = getattr(torchvision.models, name)
    if checkpoint:
        net = builder(weights=None)
        net.load_state_dict(load_checkpoint(checkpoint))
        return net
    if download:  # SageMaker: torchvision's own download path
        return builder(weights=DOWNLOADABLE[name])
    return builder(weights=None)


def hold_frozen_norms(model: nn.Module) -> None:
    """Keep a frozen backbone frozen in training mode too: its batch-norm layers (no trainable parameter) go on
    normalising with ImageNet's statistics. In training mode they would normalise each small batch by its own
    statistics and overwrite the running ones, so the features the head learns from would shift from batch to
    batch and differ again at evaluation."""
    for module in model.modules():
        frozen = not any(p.requires_grad for p in module.parameters())
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d) and frozen:
            module.eval()


class FlipAveraged(nn.Module):
    """Test-time augmentation: the mean of the network's outputs on the photo and on its mirror image (a count
    does not change in a mirror). Part of the saved model, so serving averages exactly as evaluation did."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) + self.net(x.flip(-1))) / 2


# The attribute holding each pretrained backbone's classifier, and the width of the features it reads.
_HEADS = {"resnet50": ("fc", 2048), "resnet18": ("fc", 512), "efficientnet_lite0": ("_fc", 1280)}


def backbone_of(model: nn.Module) -> nn.Module:
    return model.net if isinstance(model, FlipAveraged) else model


def head_slot(model: nn.Module) -> tuple[nn.Module, str]:
    """(the module holding the classifier, its attribute name): swap `getattr(owner, name)` to read features."""
    net = backbone_of(model)
    if isinstance(net, SmallCNN):
        raise ValueError("small_cnn trains from scratch: it has no frozen features for a linear head")
    return net, "_fc" if isinstance(net, EfficientNetLite0) else "fc"


def output_layer(model: nn.Module) -> nn.Linear:
    """The layer whose outputs are the 5 class logits: its bias is where a correction to a class prior goes."""
    net = backbone_of(model)
    head = net.fc if isinstance(net, SmallCNN) else getattr(*head_slot(model))
    layer = head[-1] if isinstance(head, nn.Sequential) else head
    if not isinstance(layer, nn.Linear) or layer.out_features != NUM_CLASSES:
        raise TypeError(f"{type(net).__name__}'s classifier does not end in a {NUM_CLASSES}-way linear layer")
    return layer


def build_model(
    name: str,
    checkpoint: Path | None = None,
    download_weights: bool = False,
    freeze_backbone: bool = True,
    head: str = "mlp",
    tta: str = "none",
) -> nn.Module:
    """The network with a 5-class head; a pretrained backbone is frozen unless told otherwise."""
    spec_for(name)
    if head not in HEADS or tta not in TTAS:
        raise ValueError(f"head must be one of {HEADS} and tta one of {TTAS}, got {head!r}, {tta!r}")
    if name == "small_cnn":
        if head != "mlp":
            raise ValueError("small_cnn trains from scratch: it has no frozen features for a linear head")
        net: nn.Module = SmallCNN()
    else:
        net = _backbone(name, checkpoint, download_weights)
        if freeze_backbone:
            for param in net.parameters():
                param.requires_grad = False
        attribute, width = _HEADS[name]
        if head in FEATURE_HEADS:
            classifier: nn.Module = nn.Linear(width, NUM_CLASSES)
        else:  # the study's head
            classifier = nn.Sequential(nn.Linear(width, 128), nn.ReLU(inplace=True), nn.Linear(128, NUM_CLASSES))
        setattr(net, attribute, classifier)
    return FlipAveraged(net) if tta == "hflip" else net
