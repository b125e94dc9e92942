"""training_code: what the network is shown (the whole bin or the study's centre crop), the hyperparameters that
choose it, and a frozen backbone that stays frozen while its head trains."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training_code"))

from data import eval_transform, train_transform  # noqa: E402
from model import build_model  # noqa: E402
from train import parse_config, run_epoch  # noqa: E402

PLAIN = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # tensors keep the 0..1 pixel values


def wide_bin_with_an_item_at_its_edge() -> Image.Image:
    """A 500x300 grey bin (ABID's usual shape) with one red item near its left wall."""
    image = Image.new("RGB", (500, 300), (128, 128, 128))
    image.paste((230, 20, 20), (10, 120, 50, 170))
    return image


def has_red(tensor: torch.Tensor) -> bool:
    """The item is in the picture: some pixels stand out from the uniform bin (colour jitter shifts both)."""
    background = tensor.flatten(1).median(1).values.view(3, 1, 1)
    return bool(((tensor - background).abs().sum(0) > 0.3).any())


def test_the_full_view_keeps_an_item_the_study_centre_crop_cuts_out():
    image = wide_bin_with_an_item_at_its_edge()
    full = eval_transform(96, 96, PLAIN, "full")(image)
    crop = eval_transform(96, 110, PLAIN, "crop")(image)
    assert full.shape == crop.shape == (3, 96, 96)
    assert has_red(full)
    assert not has_red(crop)  # the label still counts it: this is why small_cnn and efficientnet_lite0 see it all


@pytest.mark.parametrize("augmentation", ["light", "study"])
def test_full_view_training_augmentations_never_crop_an_item_away(augmentation):
    torch.manual_seed(0)
    transform = train_transform(96, PLAIN, augmentation, "full")
    for _ in range(20):
        out = transform(wide_bin_with_an_item_at_its_edge())
        assert out.shape == (3, 96, 96) and has_red(out)


def test_unknown_view_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown view 'zoom'"):
        eval_transform(96, 96, PLAIN, "zoom")


def test_each_model_brings_its_inputs_and_schedule_and_arguments_override_them():
    study = parse_config(["--model", "resnet50"], env={}).spec
    assert (study.view, study.input_size, study.resize, study.lr_schedule) == ("crop", 224, 256, "constant")
    small = parse_config(["--model", "small_cnn"], env={}).spec
    assert (small.view, small.input_size, small.lr_schedule) == ("full", 96, "onecycle")
    lite = parse_config(["--model", "efficientnet_lite0"], env={}).spec
    assert (lite.view, lite.input_size) == ("full", 416)
    argv = ["--model", "efficientnet_lite0", "--view", "crop", "--image-size", "224", "--lr-schedule", "constant"]
    custom = parse_config(argv, env={}).spec
    assert (custom.view, custom.input_size, custom.resize, custom.lr_schedule) == ("crop", 224, 256, "constant")
    for bad in (["--view", "zoom"], ["--image-size", "8"], ["--lr-schedule", "cosine"]):
        with pytest.raises(SystemExit):
            parse_config(["--model", "small_cnn", *bad], env={})


def test_a_frozen_backbone_keeps_imagenet_statistics_while_its_head_trains():
    torch.manual_seed(0)
    model = build_model("resnet18", checkpoint=None, download_weights=False, freeze_backbone=True)
    before = model.bn1.running_mean.clone()
    head_before = model.fc[0].weight.clone()
    batch = (torch.randn(8, 3, 64, 64) * 3 + 1, torch.randint(0, 5, (8,)), [])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    steps = 3
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=steps)
    result = run_epoch(
        model, [batch] * steps, torch.nn.CrossEntropyLoss(), torch.device("cpu"), optimizer, scheduler=scheduler
    )
    assert result.images == 8 * steps
    assert torch.equal(model.bn1.running_mean, before)  # batch statistics did not leak into the backbone
    assert not model.bn1.training and model.fc.training
    assert not torch.equal(model.fc[0].weight, head_before)  # while the head did learn
    assert scheduler.last_epoch == steps  # the schedule advanced once per optimiser step


def test_a_network_trained_from_scratch_updates_its_norms():
    model = build_model("small_cnn")
    before = model.features.block1_bn.running_mean.clone()
    batch = (torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,)), [])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    run_epoch(model, [batch], torch.nn.CrossEntropyLoss(), torch.device("cpu"), optimizer)
    assert not torch.equal(model.features.block1_bn.running_mean, before)


def test_batches_cross_as_uint8_and_are_normalised_as_inference_does(tmp_path):
    """The loader's batch path (uint8 from the workers, normalised per batch) equals inference's per-image
    ToTensor + Normalize, so a model is served the inputs it was evaluated on."""
    from data import CountingImageFolder
    from model import spec_for
    from train import _loader

    spec = spec_for("small_cnn")
    for label in "12345":
        (tmp_path / label).mkdir()
        wide_bin_with_an_item_at_its_edge().save(tmp_path / label / f"bin{label}.jpg")
    transform = eval_transform(spec.input_size, spec.resize, spec.normalization, spec.view)
    dataset = CountingImageFolder("test", tmp_path, transform)
    assert dataset[0][0].dtype == torch.uint8  # what crosses from a worker
    images, labels, skipped = next(iter(_loader(dataset, 5, 0, False)))
    assert images.dtype == torch.float32 and labels.tolist() == [0, 1, 2, 3, 4] and skipped == []
    with Image.open(tmp_path / "1" / "bin1.jpg") as photo:
        expected = transform(photo.convert("RGB"))
    assert torch.allclose(images[0], expected, atol=1e-5)
