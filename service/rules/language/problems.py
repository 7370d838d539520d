"""Located problems found in a ruleset, and the error that carries them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious) in a ruleset, with where it is.

    `line` and `column` are 1-based positions in the YAML text (0 when unknown); `path` is the place in
    the document, e.g. `rules[2].when`; `rule_id` names the rule when the problem is inside one.
    """

    source: str
    line: int
    column: int
    rule_id: str | None
    path: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}"
        rule = f" (rule {self.rule_id})" if self.rule_id else ""
        return f"{where}: {self.path}{rule}: {self.message}"


class RulesetError(ValueError):
    """A ruleset that cannot be used; `problems` lists every located reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} problem(s): {lines}{more}")


class RuleEvaluationError(ValueError):
    """A matched rule's computed value could not be evaluated on the given facts; `rule_id` and `path`
    (such as `then.reorder_point`) say which, when one rule's value is at fault."""

    def __init__(self, message: str, rule_id: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.path = path
