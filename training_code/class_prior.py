"""The class mix a model's answers are corrected to, and the weights that score a sample as if it had that mix.

A quick run selects a balanced sample (per_class_limit), while real bins are not balanced: the study's 10,441
photos hold 11.8 / 22.0 / 25.5 / 22.7 / 18.0 % of counts 1..5. A head fitted on a balanced sample learns its
mix; correcting its output to the population's mix (logit adjustment: add log target - log training mix)
predicts for the photos it will meet. Which mix (`--class-prior`):
- "auto" (the default): the source's class counts before per_class_limit, when the pipeline passes them
  (`--population-counts`); else ABID's population mix. A job given neither is most likely trained on a
  balanced labelled set, and a balanced training split is the common case here, not the world;
- "train": the training photos' own mix (no correction); "study"/"abid": ABID's mix; "uniform";
- five comma-separated positive weights for counts 1..5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 5
# Counts 1..5 in the study's 10,441 ABID photos (its file_list.json): the population mix when none is given.
ABID_CLASS_COUNTS = (1228, 2299, 2666, 2373, 1875)
SOURCES = ("population", "abid", "train", "uniform", "explicit")


@dataclass(frozen=True)
class Prior:
    """A class mix (positive, sums to 1) and where it came from (one of SOURCES)."""

    weights: np.ndarray
    source: str

    def as_dict(self) -> dict:
        return {"source": self.source, "weights": [round(float(w), 6) for w in self.weights]}


def _weights(text: str, what: str) -> np.ndarray:
    try:
        weights = np.asarray([float(v) for v in text.split(",")])
    except ValueError:
        weights = np.asarray([])
    if weights.shape != (NUM_CLASSES,) or not np.isfinite(weights).all() or (weights <= 0).any():
        raise ValueError(
            f"{what} must be train, study, uniform, auto or 5 positive weights like 1,2,3,2,1; got {text!r}"
        )
    return weights


def parse_counts(text: str | None) -> np.ndarray | None:
    """`--population-counts`: five positive comma-separated counts for 1..5, or None when not given."""
    if text is None or not str(text).strip():
        return None
    return _weights(str(text).strip(), "the population class prior")


def resolve_prior(text: str | None, train_counts: np.ndarray, population: np.ndarray | None = None) -> Prior:
    """The mix `--class-prior` names (see the module docstring), normalised."""
    text = (text or "auto").strip().lower()
    if text == "auto":
        weights, source = (population, "population") if population is not None else (ABID_CLASS_COUNTS, "abid")
    elif text == "train":
        weights, source = train_counts, "train"
    elif text in ("study", "abid"):
        weights, source = ABID_CLASS_COUNTS, "abid"
    elif text == "uniform":
        weights, source = np.ones(NUM_CLASSES), "uniform"
    else:
        weights, source = _weights(text, "class prior"), "explicit"
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (NUM_CLASSES,) or (weights <= 0).any():
        raise ValueError(f"every count needs a positive prior weight, got {weights.tolist()} ({source})")
    return Prior(weights / weights.sum(), source)


def mix(y: np.ndarray) -> np.ndarray:
    """The share of each class among labels `y` (class indices)."""
    return np.bincount(y, minlength=NUM_CLASSES) / len(y)


def importance_weights(y: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per photo: target share / sample share of its class (mean 1), so a weighted mean over these photos
    estimates the mean over photos drawn with the target mix."""
    return np.asarray(target)[y] / mix(y)[y]
