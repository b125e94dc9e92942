"""training_code/linear_head.py: the linear head on frozen features (solver, penalty choice by CV, logit
adjustment to a class prior) and its installation into the network that gets saved and served."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training_code"))

import class_prior  # noqa: E402
import linear_head  # noqa: E402
from model import FlipAveraged, build_model  # noqa: E402


def blobs(n_per_class: int, dim: int, separation: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim)) * separation
    y = np.repeat(np.arange(5), n_per_class)
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_the_newton_solution_is_scikit_learns_multinomial_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(12, 200, 0.3)  # more features than photos, as 1280 features of 65 photos are
    penalty = 0.5
    fit = linear_head.fit_logistic(x, y, penalty)
    z = (x - x.mean(0)) / x.std(0)
    # sklearn: C * sum of log losses + ||W||^2 / 2  ==  n * C * (mean log loss + ||W||^2 / (2 n C))
    reference = LogisticRegression(C=1 / (penalty * len(y)), tol=1e-10, max_iter=10_000).fit(z, y)
    ours = fit.logits(x)
    theirs = reference.decision_function(z)
    # softmax is invariant to a constant per photo: compare centred logits
    assert np.allclose(ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=1e-4)


def test_cross_validation_regularises_noise_hard_and_signal_less():
    noise, y = blobs(12, 300, 0.0, seed=1)
    signal, y2 = blobs(12, 300, 0.6, seed=2)
    on_noise = linear_head.select_penalty(noise, y)
    on_signal = linear_head.select_penalty(signal, y2)
    assert on_noise.folds == on_signal.folds == 5
    assert on_noise.penalty > on_signal.penalty
    assert on_signal.cv_accuracy[f"{on_signal.penalty:g}"] > 0.6
    assert set(on_noise.cv_log_loss) == {f"{p:g}" for p in linear_head.PENALTIES}


def test_too_few_photos_for_cross_validation_fall_back_to_a_middle_penalty():
    x, y = blobs(1, 20, 1.0)
    selection = linear_head.select_penalty(x, y)
    assert selection.folds == 0 and selection.penalty == linear_head.PENALTIES[len(linear_head.PENALTIES) // 2]


def test_logit_adjustment_moves_predictions_to_the_target_class_mix():
    x, y = blobs(10, 50, 0.0, seed=3)  # uninformative features: the prior decides
    as_trained, _, prior = linear_head.fit_head(x, y, "train")
    assert np.allclose(prior, 0.2)
    study, _, study_prior = linear_head.fit_head(x, y, "study")
    abid = np.array(class_prior.ABID_CLASS_COUNTS)
    assert np.allclose(study_prior, abid / abid.sum())
    shift = (study.bias - as_trained.bias) - np.log(study_prior / 0.2)
    assert np.allclose(shift, shift[0])  # the bias moved by log(target) - log(training mix), nothing else
    assert np.bincount(study.logits(x).argmax(1), minlength=5).argmax() == 2  # count 3, the study's commonest
    custom = linear_head.fit_head(x, y, "1,1,1,1,8")[2]
    assert custom[4] == pytest.approx(8 / 12)


def test_the_penalty_is_chosen_at_the_target_mix_with_held_out_logits_adjusted_to_it():
    x, y = blobs(12, 60, 0.2, seed=4)
    target = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    plain, at_target = linear_head.select_penalty(x, y), linear_head.select_penalty(x, y, target=target)
    assert plain.cv_log_loss != at_target.cv_log_loss  # scored at another mix
    from scoring import log_loss

    weights = class_prior.importance_weights(y, target)
    assert at_target.best_log_loss == pytest.approx(log_loss(at_target.held_out, y, weights), abs=1e-5)
    # the held-out answers lean to the target's commonest count, as the refitted head's will
    assert np.bincount(at_target.held_out.argmax(1), minlength=5)[2] > np.bincount(plain.held_out.argmax(1))[2]


def test_the_fitted_head_is_installed_and_serves_the_logits_it_was_chosen_with():
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", head="linear", tta="hflip").eval()
    assert isinstance(model, FlipAveraged)
    images = torch.rand(10, 3, 64, 64)
    y = torch.arange(10) % 5
    x, labels, skipped = linear_head.extract(model, [(images, y, [])], torch.device("cpu"))
    assert x.shape == (10, 1280) and labels.tolist() == y.tolist() and skipped == []
    with torch.no_grad():  # the features are the mean over the photo and its mirror image
        net = model.net
        net._fc, head = torch.nn.Identity(), net._fc
        expected = (net(images) + net(images.flip(-1))) / 2
        net._fc = head
    assert np.allclose(x, expected.double().numpy(), atol=1e-5)
    fit, _, _ = linear_head.fit_head(x, labels, "train")
    linear_head.install(model, fit)
    with torch.no_grad():
        served = model(images).double().numpy()
    assert np.allclose(served, fit.logits(x), atol=1e-3)
    assert isinstance(model.net._fc, torch.nn.Linear)  # the classifier is back after extraction


def test_a_network_trained_from_scratch_has_no_linear_head():
    with pytest.raises(ValueError, match="from scratch"):
        build_model("small_cnn", head="linear")


def test_efficientnet_lite0_defaults_to_the_ordinal_head_and_the_study_models_keep_their_recipe():
    from train import parse_config

    lite = parse_config(["--model", "efficientnet_lite0"], env={}).spec
    assert (lite.head, lite.view, lite.input_size, lite.tta) == ("ordinal", "full", 416, "none")
    study = parse_config(["--model", "resnet50"], env={}).spec
    assert (study.head, study.view, study.input_size, study.tta) == ("mlp", "crop", 224, "none")
    assert parse_config(["--model", "efficientnet_lite0", "--head", "mlp"], env={}).spec.head == "mlp"
    for refused in (
        ["--model", "small_cnn", "--head", "linear"],
        ["--model", "small_cnn", "--head", "ordinal"],
        ["--model", "efficientnet_lite0", "--freeze-backbone", "false"],
    ):
        with pytest.raises(SystemExit):
            parse_config(refused, env={})
