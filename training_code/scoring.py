"""Scores of a head's held-out class scores (logits), each optionally weighted per photo (class_prior's
importance weights: the score at a target class mix).

- log loss: the probability given to the true count (proper; blind to how far a wrong answer is);
- ranked probability score: the squared distance between the predicted and the true cumulative distribution
  over counts 1..5 (proper, and ordinal: mass on 4 for a 5 costs less than mass on 1). Recipes are compared by it.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def _mean(values: np.ndarray, weights: np.ndarray | None) -> float:
    return float(values.mean() if weights is None else (weights * values).sum() / weights.sum())


def log_loss(logits: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return _mean(-log_p[np.arange(len(y)), y], weights)


def ranked_probability_score(logits: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    cumulative = np.cumsum(softmax(logits), 1)[:, :-1]
    observed = (np.arange(logits.shape[1] - 1)[None, :] >= y[:, None]).astype(float)
    return _mean(((cumulative - observed) ** 2).sum(1), weights)


def accuracy(logits: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    return _mean((logits.argmax(1) == y).astype(float), weights)
