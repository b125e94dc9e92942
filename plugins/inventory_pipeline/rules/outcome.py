"""What one rule evaluation concluded, in the vocabulary of DescribeTrainingJob's rule statuses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ISSUES_FOUND, NO_ISSUES_FOUND, ERROR = "IssuesFound", "NoIssuesFound", "Error"


@dataclass
class RuleOutcome:
    name: str
    status: str  # IssuesFound | NoIssuesFound | Error
    details: str
    triggered: int = 0
    datapoints: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rule_parameters(rule_configuration: dict[str, Any]) -> dict[str, str]:
    """RuleParameters without the dispatch key."""
    return {k: v for k, v in (rule_configuration.get("RuleParameters") or {}).items() if k != "rule_to_invoke"}
