"""training_code/ordinal_head.py: the count regressed on frozen features (weighted ridge, penalty by CV at the
target mix), answered by the nearest count through one nn.Linear; and train.py's prior correction of heads
trained over epochs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training_code"))

import linear_head  # noqa: E402
import ordinal_head  # noqa: E402
from class_prior import Prior, importance_weights, resolve_prior  # noqa: E402
from model import build_model, output_layer  # noqa: E402
from scoring import ranked_probability_score  # noqa: E402


def ordered(n_per_class: int, dim: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features that carry the count along one direction (a latent count plus noise), as a count should."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(5), n_per_class)
    direction = rng.normal(size=dim)
    latent = y + rng.normal(scale=noise, size=len(y))
    return np.outer(latent, direction) + rng.normal(size=(len(y), dim)), y


def test_the_ridge_solution_is_scikit_learns_weighted_ridge():
    from sklearn.linear_model import Ridge

    x, y = ordered(8, 60, 0.5)
    weights = importance_weights(y, np.array([0.1, 0.2, 0.4, 0.2, 0.1]))
    penalty = 0.3
    fit = ordinal_head.fit_ridge(x, y, penalty, weights)
    z = (x - x.mean(0)) / x.std(0)
    # sklearn: sum_i w_i (t_i - z_i b - c)^2 + alpha ||b||^2; ours is that / n with penalty = alpha / n (mean w = 1)
    reference = Ridge(alpha=penalty * len(y), tol=1e-12).fit(z, y + 1.0, sample_weight=weights)
    assert np.allclose(fit.logits(x)[:, 0], reference.predict(z), atol=1e-6)


def test_the_count_logits_answer_the_nearest_count_with_the_gaussian_as_probabilities():
    score = np.array([-3.0, 0.9, 1.6, 2.49, 3.51, 4.4, 9.0])
    logits = ordinal_head.count_logits(score, 0.7)
    assert (logits.argmax(1) + 1).tolist() == [1, 1, 2, 2, 4, 4, 5]
    gaussian = np.exp(-((score[:, None] - np.arange(1, 6)) ** 2) / (2 * 0.7))
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(probabilities / probabilities.sum(1, keepdims=True), gaussian / gaussian.sum(1, keepdims=True))


def test_cross_validation_regularises_noise_hard_and_an_ordered_signal_less():
    noise, y = ordered(12, 200, 0.0, seed=1)
    noise = np.random.default_rng(5).normal(size=noise.shape)  # the labels carry nothing
    signal, y2 = ordered(12, 200, 0.4, seed=2)
    on_noise, on_signal = ordinal_head.select_penalty(noise, y), ordinal_head.select_penalty(signal, y2)
    assert on_noise.folds == on_signal.folds == 5
    assert on_noise.penalty > on_signal.penalty
    assert on_signal.sigma2 < 0.5 < on_noise.sigma2  # the held-out spread of the count around its score
    assert on_signal.cv_accuracy[f"{on_signal.penalty:g}"] > 0.6


def test_on_an_ordered_signal_the_ordinal_head_errs_by_less_than_the_classifier():
    x, y = ordered(12, 300, 0.8, seed=3)
    ordinal, classifier = ordinal_head.select_penalty(x, y), linear_head.select_penalty(x, y)
    errors = {name: np.abs(s.held_out.argmax(1) - y) for name, s in (("ordinal", ordinal), ("classifier", classifier))}
    assert errors["ordinal"].max() <= 2 and (errors["ordinal"] ** 2).mean() < (errors["classifier"] ** 2).mean()
    assert ranked_probability_score(ordinal.held_out, y) < ranked_probability_score(classifier.held_out, y)


def test_the_prior_correction_moves_the_answers_to_the_target_mix():
    rng = np.random.default_rng(6)
    y = np.repeat(np.arange(5), 10)
    x = rng.normal(size=(len(y), 40))  # uninformative: the prior decides
    as_trained, _, _ = ordinal_head.fit_head(x, y, "train")
    assert set(as_trained.logits(x).argmax(1) + 1) <= {2, 3, 4}  # about the balanced mean, 3
    fives, selection, target = ordinal_head.fit_head(x, y, "1,1,1,1,8")
    assert target[4] == pytest.approx(8 / 12)
    # the weighted mean count is (1 + 2 + 3 + 4 + 40) / 12 = 4.17: the answers move up to it
    assert np.mean(fives.logits(x).argmax(1) + 1) > np.mean(as_trained.logits(x).argmax(1) + 1) + 0.5
    assert selection.cv_mse and selection.held_out.shape == (len(y), 5)


def test_the_fitted_ordinal_head_is_installed_and_serves_the_nearest_count():
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", head="ordinal").eval()
    images = torch.rand(10, 3, 64, 64)
    x, labels, _ = linear_head.extract(model, [(images, torch.arange(10) % 5, [])], torch.device("cpu"))
    fit, selection, _ = ordinal_head.fit_head(x, labels, "train")
    linear_head.install(model, fit)
    with torch.no_grad():
        served = model(images).double().numpy()
    assert np.allclose(served, fit.logits(x), atol=1e-3)
    score = ordinal_head.fit_ridge(x, labels, selection.penalty, np.ones(len(labels))).logits(x)[:, 0]
    assert (served.argmax(1) + 1).tolist() == np.clip(np.round(score), 1, 5).astype(int).tolist()


def test_an_epoch_trained_head_is_corrected_from_its_training_mix_to_the_prior():
    from train import adjust_to_prior

    model = build_model("small_cnn")
    before = output_layer(model).bias.detach().clone().numpy()
    train_counts = {"1": 10, "2": 10, "3": 10, "4": 10, "5": 10}
    prior = resolve_prior("1,2,4,2,1", np.ones(5))
    adjust_to_prior(model, prior, train_counts)
    shift = output_layer(model).bias.detach().numpy() - before
    assert np.allclose(shift, np.log(np.array([1, 2, 4, 2, 1]) / 10) - np.log(0.2), atol=1e-6)
    resnet_like = build_model("resnet18", head="mlp")
    assert output_layer(resnet_like) is resnet_like.fc[-1]


def test_a_job_corrects_to_the_population_it_is_given_else_to_abids_mix():
    from train import job_prior, parse_config

    balanced = {str(c): 13 for c in range(1, 6)}
    given = parse_config(["--model", "efficientnet_lite0", "--population-counts", "10,20,30,20,10"], env={})
    assert given.class_prior == "auto" and job_prior(given, balanced).source == "population"
    assert job_prior(parse_config([], env={}), balanced).source == "abid"
    explicit = parse_config(["--class-prior", "train", "--population-counts", "1,2,3,2,1"], env={})
    assert isinstance(job_prior(explicit, balanced), Prior) and job_prior(explicit, balanced).source == "train"
    for refused in (["--population-counts", "1,2,3"], ["--class-prior", "0,1,1,1,1"]):
        with pytest.raises(SystemExit):
            parse_config(refused, env={})
