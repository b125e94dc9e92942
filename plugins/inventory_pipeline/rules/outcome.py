"""What one rule evaluation concluded, in the vocabulary of DescribeTrainingJob's rule statuses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ISSUES_FOUND, NO_ISSUES_FOUND, ERROR = "IssuesFound", "NoIssuesFound", "Error"


@dataclass
class RuleOutcome:
    name: str  # the RuleConfigurationName
    status: str  # IssuesFound | NoIssuesFound | Error
    details: str  # a sentence: what triggered and where, what was checked, or why it could not run
    triggered: int = 0  # violations found (debugger rules stop at the first, as SageMaker's do)
    datapoints: int = 0  # checks made (debugger) or metric samples read (profiler)
    parameters: dict[str, Any] = field(default_factory=dict)  # the effective parameters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
