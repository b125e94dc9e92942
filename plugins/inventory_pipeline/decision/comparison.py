"""Comparing answers on the same test images, in counts of images, never in float differences.

Pure functions over the per-image answers a training job records (`answers`: [name, true count, predicted
count] for every test image it scored, the candidate's and the champion's):
- `paired`: two models on the same images: how many each alone got right, and the exact one-sided McNemar test
  (a binomial test on the images where exactly one of them is right: under "no better", each such image is a
  fair coin);
- `constant`: the trivial answer (always the same count) on those images, scored the same way;
- `class_recall`: correct images per true count, for the per-class guard;
- `at_prior`: accuracy and squared error re-weighted to the class mix the job corrected its answers to (its
  `class_prior`), so the trivial answers are judged on the mix the model will meet, not the test split's.
Thresholds are compared exactly with `Fraction`s of image counts: "more than 1 % of 200 images" is "more than 2
images", with no float edge where 0.93 - 0.92 > 0.01.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from inventory_pipeline.dataset.abid import CLASSES as COUNTS

MIDDLE_COUNT = 3

Answers = dict[str, tuple[int, int]]  # image name -> (true count, predicted count)
Prior = dict[int, Fraction]  # count -> its share of the photos a model will meet (they sum to 1)


class AnswersError(ValueError):
    """The recorded answers are missing or malformed, or two sets do not cover the same labelled images."""


def read_answers(raw: Any, who: str) -> Answers:
    """`[[name, truth, predicted], ...]` from metrics.json as a dict, refusing anything malformed."""
    if not isinstance(raw, list) or not raw:
        raise AnswersError(f"the {who}'s per-image answers were not recorded")
    answers: Answers = {}
    for row in raw:
        if not (isinstance(row, list | tuple) and len(row) == 3 and isinstance(row[0], str)):
            raise AnswersError(f"the {who}'s answers hold a malformed row {str(row)[:80]!r}")
        truth, predicted = row[1], row[2]
        if truth not in COUNTS or predicted not in COUNTS:
            raise AnswersError(f"the {who}'s answer for {row[0]} is not a count 1-5: {truth}, {predicted}")
        if row[0] in answers:
            raise AnswersError(f"the {who}'s answers name {row[0]} twice")
        answers[row[0]] = (int(truth), int(predicted))
    return answers


def more_than(count: int, share: float, of: int) -> bool:
    """count > share * of, exactly (the share as the decimal a person wrote, not its binary float)."""
    return Fraction(count) > Fraction(str(share)) * of


def mcnemar_p(only_first: int, only_second: int) -> float:
    """One-sided exact McNemar p-value that the first is better: P(X >= only_first), X ~ Bin(n, 1/2), n the
    discordant images. 1.0 when there are none (nothing says either is better)."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(only_first, n + 1)) / 2**n


@dataclass(frozen=True)
class Paired:
    images: int
    first_correct: int
    second_correct: int
    only_first: int  # images only the first model answered right
    only_second: int
    p_value: float  # one-sided: is the first better?

    @property
    def gain(self) -> int:
        """How many more images the first answered right (may be negative)."""
        return self.first_correct - self.second_correct

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain": self.gain, "test": "exact McNemar"}


def p_text(p: float) -> str:
    """A p-value as people read it: three significant digits, and "< 1e-6" past what any test set can mean."""
    return "< 1e-6" if p < 1e-6 else f"= {p:.3g}"


def paired(first: Answers, second: Answers) -> Paired:
    """Two models' answers on the same labelled images (AnswersError if the images or their labels differ)."""
    if first.keys() != second.keys():
        missing = sorted(first.keys() ^ second.keys())
        raise AnswersError(f"the two models answered different images ({len(missing)} differ, e.g. {missing[0]})")
    relabelled = [name for name in first if first[name][0] != second[name][0]]
    if relabelled:
        raise AnswersError(f"the two models were scored against different labels (e.g. {relabelled[0]})")
    right_1 = {name for name, (truth, guess) in first.items() if truth == guess}
    right_2 = {name for name, (truth, guess) in second.items() if truth == guess}
    only_1, only_2 = len(right_1 - right_2), len(right_2 - right_1)
    return Paired(len(first), len(right_1), len(right_2), only_1, only_2, mcnemar_p(only_1, only_2))


def squared_error(answers: Answers) -> int:
    """Sum of squared count errors (an integer: RMSEs are compared through it, exactly)."""
    return sum((truth - guess) ** 2 for truth, guess in answers.values())


def rmse(answers: Answers) -> float:
    return math.sqrt(squared_error(answers) / len(answers)) if answers else float("nan")


def constant(answers: Answers, count: int) -> Answers:
    """What always answering `count` would have answered on the same images."""
    return {name: (truth, count) for name, (truth, _) in answers.items()}


def most_common(weights: dict[int, Any]) -> int:
    """The count with the largest weight (ties: the one nearer the middle, then the smaller)."""
    return min(weights, key=lambda c: (-weights[c], abs(c - MIDDLE_COUNT), c))


def majority_count(train_counts: dict[str, int] | None) -> int | None:
    """The train split's most common count (ties: the one nearer the middle, then the smaller); None if unknown."""
    counts = {int(c): int(n) for c, n in (train_counts or {}).items() if str(c).isdigit() and int(c) in COUNTS}
    if not counts or max(counts.values()) == 0:
        return None
    return most_common(counts)


def read_prior(raw: Any) -> Prior | None:
    """metrics.json's `class_prior` ({"source", "weights": [w1, ..., w5]}) as exact shares; None when the job
    recorded none (then the test images are judged as they are)."""
    weights = raw.get("weights") if isinstance(raw, dict) else None
    if not isinstance(weights, list) or len(weights) != len(COUNTS):
        return None
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and 0 < w < math.inf for w in weights):
        return None
    shares = [Fraction(str(w)) for w in weights]  # the decimals the job wrote, exactly
    return {count: share / sum(shares) for count, share in zip(COUNTS, shares, strict=True)}


def at_prior(answers: Answers, prior: Prior) -> tuple[Fraction, Fraction]:
    """(accuracy, mean squared error) at the prior's mix: each image weighs prior[its count] / the share of its
    count among these images. A count with no test image has no answer to weigh: its share goes to the others
    in proportion (the figure is then at the prior restricted to the counts tested)."""
    right, squared, images = dict.fromkeys(COUNTS, 0), dict.fromkeys(COUNTS, 0), dict.fromkeys(COUNTS, 0)
    for truth, guess in answers.values():
        images[truth] += 1
        right[truth] += truth == guess
        squared[truth] += (truth - guess) ** 2
    tested = [c for c in COUNTS if images[c]]
    mass = sum(prior[c] for c in tested)
    accuracy = sum(prior[c] * Fraction(right[c], images[c]) for c in tested) / mass
    return accuracy, sum(prior[c] * Fraction(squared[c], images[c]) for c in tested) / mass


def class_recall(answers: Answers) -> dict[int, tuple[int, int]]:
    """True count -> (images answered right, images of that count)."""
    recall = {c: [0, 0] for c in COUNTS}
    for truth, guess in answers.values():
        recall[truth][1] += 1
        recall[truth][0] += truth == guess
    return {c: (right, total) for c, (right, total) in recall.items()}
