"""An ordinal head on a frozen backbone's features: counts are ordered, so regress the count and answer the nearest.

A classifier treats 1..5 as unrelated labels: answering 1 for a 5 costs it what answering 4 does. Here a ridge
regression of the count on the standardised features (the L2 strength chosen by stratified cross-validation on
the train channel only, lowest held-out squared error) gives a score s(x), the estimated mean count; the answer is
the count nearest to it (1..5), which is the answer with the lowest expected squared error given that mean.

Prior correction: the regression is fitted with importance weights (target share / training share of each
photo's count), so s(x) estimates the mean count among photos drawn with the target mix; its cross-validation is
scored with the same weights. On a training set that already has the target mix the weights are all 1.

Probabilities: the count is modelled as N(s(x), sigma^2) over 1..5, sigma^2 the held-out weighted squared error.
Its log density is (k s - k^2 / 2) / sigma^2 up to a term that does not depend on k: linear in the features, so
the head is one nn.Linear with 5 outputs whose argmax is the nearest count and whose softmax is that model;
`inference.py` serves it unchanged and the held-out logits compare with the classifier's by the same scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from class_prior import NUM_CLASSES, Prior, importance_weights, resolve_prior
from linear_head import LinearFit, Projection, cv_folds, one_blas_thread, stratified_folds
from scoring import accuracy

log = logging.getLogger("train.ordinal_head")

COUNTS = np.arange(1, NUM_CLASSES + 1, dtype=float)
# L2 strengths tried (penalty * ||beta||^2 added to the mean weighted squared error over standardised features).
PENALTIES = tuple(float(10.0**e) for e in np.arange(-1.0, 4.01, 0.5))
FALLBACK_SIGMA2 = 1.0  # no cross-validation: a count's spread around the score is unknown; one count either way


@dataclass
class OrdinalSelection:
    penalty: float
    folds: int
    sigma2: float = FALLBACK_SIGMA2  # held-out weighted squared error of the score at the chosen penalty
    cv_mse: dict[str, float] = field(default_factory=dict)  # penalty -> held-out weighted squared error
    cv_accuracy: dict[str, float] = field(default_factory=dict)
    held_out: np.ndarray | None = field(default=None, repr=False)  # held-out count logits at the chosen penalty

    def as_dict(self) -> dict:
        return {
            "penalty": self.penalty,
            "folds": self.folds,
            "sigma2": round(self.sigma2, 5),
            "cv_mse": self.cv_mse,
            "cv_accuracy": self.cv_accuracy,
        }


def count_logits(score: np.ndarray, sigma2: float) -> np.ndarray:
    """[n, 5] logits of N(score, sigma2) over counts 1..5: argmax is the nearest count."""
    return (np.outer(score, COUNTS) - COUNTS**2 / 2) / sigma2


def _centred(z: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Weighted centring: the intercept is the weighted mean, never penalised."""
    mean_z, mean_t = weights @ z / weights.sum(), weights @ target / weights.sum()
    return z - mean_z, target - mean_t, (mean_z, mean_t)


def _ridge_path(z: np.ndarray, target: np.ndarray, weights: np.ndarray, penalties: tuple[float, ...]) -> dict:
    """penalty -> (beta, intercept) of mean_w (target - z beta - b)^2 + penalty ||beta||^2, by one eigen solve."""
    zc, tc, (mean_z, mean_t) = _centred(z, target, weights)
    n = len(target)
    gram = (zc * weights[:, None]).T @ zc / n
    values, vectors = np.linalg.eigh(gram)
    projected = vectors.T @ ((zc * weights[:, None]).T @ tc / n)
    path = {}
    for penalty in penalties:
        beta = vectors @ (projected / (np.clip(values, 0, None) + penalty))
        path[penalty] = (beta, mean_t - mean_z @ beta)
    return path


def select_penalty(
    features: np.ndarray,
    y: np.ndarray,
    target: np.ndarray | None = None,
    seed: int = 0,
    penalties: tuple[float, ...] = PENALTIES,
) -> OrdinalSelection:
    """The L2 strength with the lowest held-out squared error of the count in stratified k-fold CV on these
    photos only, each photo weighted to the `target` mix (None: as they are); ties go to the stronger
    penalty. Too few photos per class for two folds: the middle of the grid, sigma^2 FALLBACK_SIGMA2."""
    folds = cv_folds(y)
    if folds < 2:
        middle = penalties[len(penalties) // 2]
        log.warning("a class has fewer than 2 training photos: no cross-validation, ridge penalty %g", middle)
        return OrdinalSelection(middle, 0)
    weights = importance_weights(y, target) if target is not None else np.ones(len(y))
    counts = COUNTS[y]
    scores = {penalty: np.zeros(len(y)) for penalty in penalties}
    with one_blas_thread():
        for test in stratified_folds(y, folds, seed):
            train = np.setdiff1d(np.arange(len(y)), test)
            projection = Projection.of(features[train])
            fold_weights = importance_weights(y[train], target) if target is not None else np.ones(len(train))
            path = _ridge_path(projection(features[train]), counts[train], fold_weights, penalties)
            z_test = projection(features[test])
            for penalty, (beta, intercept) in path.items():
                scores[penalty][test] = z_test @ beta + intercept
    selection = OrdinalSelection(penalties[0], folds)
    for penalty in penalties:
        mse = float(weights @ (scores[penalty] - counts) ** 2 / weights.sum())
        selection.cv_mse[f"{penalty:g}"] = round(mse, 5)
        selection.cv_accuracy[f"{penalty:g}"] = round(accuracy(count_logits(scores[penalty], 1.0), y, weights), 4)
    best = min(selection.cv_mse.values())
    selection.penalty = max(p for p in penalties if selection.cv_mse[f"{p:g}"] == best)
    selection.sigma2 = max(float(weights @ (scores[selection.penalty] - counts) ** 2 / weights.sum()), 1e-6)
    selection.held_out = count_logits(scores[selection.penalty], selection.sigma2)
    if len(penalties) > 1 and selection.penalty in (penalties[0], penalties[-1]):
        log.warning("the chosen ridge penalty %g is at the edge of the grid %s", selection.penalty, penalties)
    return selection


def fit_ridge(features: np.ndarray, y: np.ndarray, penalty: float, weights: np.ndarray) -> LinearFit:
    """The count's score as a LinearFit with one output (standardisation folded in)."""
    with one_blas_thread():
        projection = Projection.of(features)
        beta, intercept = _ridge_path(projection(features), COUNTS[y], weights, (penalty,))[penalty]
        return projection.to_raw(np.append(beta, intercept)[None, :])


def fit_head(
    features: np.ndarray,
    y: np.ndarray,
    prior: Prior | str | None = "train",
    seed: int = 0,
    selection: OrdinalSelection | None = None,
) -> tuple[LinearFit, OrdinalSelection, np.ndarray]:
    """Choose the penalty by CV at the target mix (unless given), refit on all these photos with the target's
    importance weights, and turn the score into the 5 count logits. Returns (fit, selection, target prior)."""
    if not isinstance(prior, Prior):
        prior = resolve_prior(prior, np.bincount(y, minlength=NUM_CLASSES))
    selection = selection or select_penalty(features, y, prior.weights, seed)
    score = fit_ridge(features, y, selection.penalty, importance_weights(y, prior.weights))
    weight = np.outer(COUNTS, score.weight[0]) / selection.sigma2
    bias = (COUNTS * score.bias[0] - COUNTS**2 / 2) / selection.sigma2
    return LinearFit(weight, bias), selection, prior.weights
