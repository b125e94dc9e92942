"""A linear head fitted on a frozen backbone's features: what generalises from a hundred labelled bin photos.

An MLP head trained by Adam on 80 real photos reached 0.75 training accuracy and 0.20 on photos it had never seen.
Here the head is one multinomial logistic regression on the backbone's pooled features (standardised), with an L2
penalty whose strength is chosen by stratified cross-validation on the train channel only (mean held-out log
loss), then refitted on the whole channel. It is solved by Newton's method in the span of the training
features (the L2 solution lies there), so a fit takes milliseconds and the same photos always give the same head.

Logit adjustment: logistic regression learns the class mix of its training photos. When the photos it will
count follow another mix (class_prior.py: by default the population's), adding log(target prior) - log(training
mix) to the logits predicts for that mix. The penalty's cross-validation scores the held-out photos at that mix
too (adjusted logits, importance weights), so the strength is chosen for the photos the head will meet.

The fitted head is an ordinary nn.Linear on the raw features (standardisation folded in), so the saved model is
the backbone plus that layer and `inference.py` serves it unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from class_prior import Prior, importance_weights, mix, resolve_prior
from model import head_slot
from precision import FP32, Precision
from scoring import accuracy, log_loss, softmax
from torch import nn

log = logging.getLogger("train.linear_head")

NUM_CLASSES = 5
# L2 strengths tried (penalty * ||W||^2 / 2 added to the mean log loss over standardised features).
PENALTIES = tuple(float(10.0**e) for e in np.arange(-1.0, 3.01, 0.5))
MAX_FOLDS = 5


@contextlib.contextmanager
def features_only(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its classifier swapped for the identity: it outputs the pooled backbone features (the
    mean over the photo and its mirror image when the model averages flips)."""
    owner, attribute = head_slot(model)
    classifier = getattr(owner, attribute)
    setattr(owner, attribute, nn.Identity())
    try:
        yield model
    finally:
        setattr(owner, attribute, classifier)


def extract(model: nn.Module, loader, device, precision: Precision = FP32) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(features float64 [n, d], class indices [n], skipped images) of every decodable photo in `loader`."""
    model.eval()
    features, labels, skipped = [], [], []
    with features_only(model), torch.no_grad():
        for images, targets, bad in loader:
            skipped += bad
            if len(targets):
                with precision.autocast():
                    pooled = model(precision.inputs(images.to(device, non_blocking=True)))
                features.append(pooled.double().cpu().numpy())
                labels.append(targets.numpy())
    if not features:
        raise RuntimeError("no decodable image to extract features from")
    return np.concatenate(features), np.concatenate(labels).astype(int), skipped


def _newton_logistic(
    x: np.ndarray, y: np.ndarray, penalty: float, start: np.ndarray | None = None, iterations: int = 50
) -> np.ndarray:
    """Multinomial logistic regression, mean log loss + penalty/2 ||W||^2 (+ a vanishing penalty on the bias that
    pins softmax's free constant). x [n, r]; returns theta [K, r + 1], the bias last. `start`: a warm start."""
    n, r = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    onehot = np.eye(NUM_CLASSES)[y]
    reg = np.full(r + 1, penalty)
    reg[-1] = 1e-8
    theta = np.zeros((NUM_CLASSES, r + 1)) if start is None else start.copy()

    def objective(t: np.ndarray) -> float:
        return log_loss(xb @ t.T, y) + 0.5 * float((reg * t * t).sum())

    current = objective(theta)
    for _ in range(iterations):
        p = softmax(xb @ theta.T)
        grad = (p - onehot).T @ xb / n + reg * theta
        if np.abs(grad).max() < 1e-9:
            break
        # Hessian of the mean log loss: sum_i (diag(p_i) - p_i p_i^T) (x) x_i x_i^T / n, one block per class pair
        hessian = np.empty((NUM_CLASSES, r + 1, NUM_CLASSES, r + 1))
        for k in range(NUM_CLASSES):
            for m in range(k, NUM_CLASSES):
                w = p[:, k] * ((k == m) - p[:, m])
                block = (xb * w[:, None]).T @ xb / n
                hessian[k, :, m, :] = block
                hessian[m, :, k, :] = block
        hessian = hessian.reshape(NUM_CLASSES * (r + 1), -1)
        hessian[np.diag_indices_from(hessian)] += np.tile(reg, NUM_CLASSES)
        step = np.linalg.solve(hessian, grad.reshape(-1)).reshape(theta.shape)
        scale = 1.0
        while scale > 1e-6:  # backtracking: Newton's full step can overshoot far from the optimum
            candidate = theta - scale * step
            value = objective(candidate)
            if value <= current - 1e-4 * scale * float((grad * step).sum()):
                break
            scale /= 2
        else:
            break
        improved = current - value
        theta, current = candidate, value
        if improved < 1e-12:
            break
    return theta


@dataclass
class LinearFit:
    """A fitted head: logits = features @ weight.T + bias (standardisation and logit adjustment folded in)."""

    weight: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias


@dataclass
class Projection:
    """Standardisation on the fitting photos, then coordinates in the span of their features: the L2 solution
    lies in that span, so solving in r <= n dimensions instead of d gives the same head, much faster."""

    mean: np.ndarray
    std: np.ndarray
    basis: np.ndarray  # [d, r]

    @classmethod
    def of(cls, features: np.ndarray) -> Projection:
        mean, std = features.mean(0), features.std(0)
        std[std < 1e-8] = 1.0  # a feature constant on these photos carries nothing; it keeps zero weight
        _, singular, vt = np.linalg.svd((features - mean) / std, full_matrices=False)
        return cls(mean, std, vt[singular > singular.max() * 1e-10].T)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std) @ self.basis

    def to_raw(self, theta: np.ndarray) -> LinearFit:
        weight = (theta[:, :-1] @ self.basis.T) / self.std
        return LinearFit(weight, theta[:, -1] - weight @ self.mean)


def one_blas_thread():
    """Tiny matrices: one BLAS thread is several times faster than many fighting over busy cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def fit_logistic(features: np.ndarray, y: np.ndarray, penalty: float) -> LinearFit:
    with one_blas_thread():
        projection = Projection.of(features)
        return projection.to_raw(_newton_logistic(projection(features), y, penalty))


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out index sets: each class's photos, shuffled by `seed`, dealt round-robin to the folds."""
    rng = np.random.default_rng(seed)
    held: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(y == label))
        for i, index in enumerate(members):
            held[(offset + i) % folds].append(int(index))
        offset += len(members)  # the next class starts where this one stopped: folds stay even in size
    return [np.array(sorted(h)) for h in held]


@dataclass
class HeadSelection:
    penalty: float
    folds: int
    cv_log_loss: dict[str, float] = field(default_factory=dict)  # penalty -> held-out log loss at the target mix
    cv_accuracy: dict[str, float] = field(default_factory=dict)
    # held-out logits of every photo at the chosen penalty, adjusted to the target mix (None without CV)
    held_out: np.ndarray | None = field(default=None, repr=False)

    @property
    def best_log_loss(self) -> float:
        return self.cv_log_loss.get(f"{self.penalty:g}", math.nan)

    def as_dict(self) -> dict:
        return {
            "penalty": self.penalty,
            "folds": self.folds,
            "cv_log_loss": self.cv_log_loss,
            "cv_accuracy": self.cv_accuracy,
        }


def cv_folds(y: np.ndarray) -> int:
    """Stratified folds the photos allow: at most MAX_FOLDS, at least one photo of each class per fold."""
    return min(MAX_FOLDS, int(np.bincount(y, minlength=NUM_CLASSES).min()))


def select_penalty(
    features: np.ndarray,
    y: np.ndarray,
    seed: int = 0,
    penalties: tuple[float, ...] = PENALTIES,
    target: np.ndarray | None = None,
) -> HeadSelection:
    """The L2 strength with the lowest held-out log loss in stratified k-fold CV on these photos only (ties go
    to the stronger penalty). With a `target` mix, each fold's held-out logits are adjusted to it and the photos
    weighted to it (class_prior.importance_weights): the loss expected on photos drawn with that mix. Too few
    photos per class for two folds: the middle of the grid."""
    folds = cv_folds(y)
    if folds < 2:
        middle = penalties[len(penalties) // 2]
        log.warning("a class has fewer than 2 training photos: no cross-validation, L2 penalty %g", middle)
        return HeadSelection(middle, 0)
    weights = importance_weights(y, target) if target is not None else None
    held = {penalty: np.zeros((len(y), NUM_CLASSES)) for penalty in penalties}
    with one_blas_thread():
        for test in stratified_folds(y, folds, seed):
            train = np.setdiff1d(np.arange(len(y)), test)
            projection = Projection.of(features[train])
            z_train, z_test = projection(features[train]), projection(features[test])
            shift = np.log(target) - np.log(mix(y[train])) if target is not None else 0.0
            theta = None
            for penalty in sorted(penalties, reverse=True):  # strong to weak: each solution starts the next
                theta = _newton_logistic(z_train, y[train], penalty, theta)
                held[penalty][test] = z_test @ theta[:, :-1].T + theta[:, -1] + shift
    selection = HeadSelection(penalties[0], folds)
    for penalty in penalties:
        selection.cv_log_loss[f"{penalty:g}"] = round(log_loss(held[penalty], y, weights), 5)
        selection.cv_accuracy[f"{penalty:g}"] = round(accuracy(held[penalty], y, weights), 4)
    best = min(selection.cv_log_loss.values())
    selection.penalty = max(p for p in penalties if selection.cv_log_loss[f"{p:g}"] == best)
    selection.held_out = held[selection.penalty]
    if selection.penalty in (penalties[0], penalties[-1]):
        log.warning("the chosen L2 penalty %g is at the edge of the grid %s", selection.penalty, penalties)
    return selection


def fit_head(
    features: np.ndarray,
    y: np.ndarray,
    prior: Prior | str | None = "train",
    seed: int = 0,
    selection: HeadSelection | None = None,
) -> tuple[LinearFit, HeadSelection, np.ndarray]:
    """Choose the penalty by CV at the target mix (unless given), refit on all these photos, adjust the logits
    from their class mix to the target's. `prior`: a class_prior.Prior or its `--class-prior` text. Returns
    (fit, selection, the target prior)."""
    if not isinstance(prior, Prior):
        prior = resolve_prior(prior, np.bincount(y, minlength=NUM_CLASSES))
    selection = selection or select_penalty(features, y, seed, target=prior.weights)
    fit = fit_logistic(features, y, selection.penalty)
    fit.bias = fit.bias + np.log(prior.weights) - np.log(mix(y))
    return fit, selection, prior.weights


def install(model: nn.Module, fit: LinearFit) -> None:
    """Put the fitted weights into the model's linear classifier (what gets saved and served)."""
    owner, attribute = head_slot(model)
    layer = getattr(owner, attribute)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"the model's classifier is {type(layer).__name__}, not the linear head")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(fit.weight))
        layer.bias.copy_(torch.from_numpy(fit.bias))
