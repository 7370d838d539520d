"""The ruleset language (parse, check, canonical form, diff) and its two engines (durable_rules, Python).

Everything other parts need is imported from here; see docs/rulesets.md for the language.
"""

from service.rules.canonical import canonical_json, diff_rulesets, ruleset_sha256
from service.rules.checks import TestResult, ValidationReport, check_ruleset, check_text, dry_run
from service.rules.compiler import ENGINES, Engine, compile_ruleset
from service.rules.document import Rule, Ruleset, RulesetTest, parse_ruleset
from service.rules.evaluation import Evaluation, Evaluator, TraceLevel
from service.rules.facts import fact_problems, facts_bound_problem
from service.rules.kinds import FACT_CATALOG, RESULT_FIELDS
from service.rules.problems import Problem, RuleEvaluationError, RulesetError

__all__ = [
    "ENGINES",
    "FACT_CATALOG",
    "RESULT_FIELDS",
    "Engine",
    "Evaluation",
    "Evaluator",
    "Problem",
    "Rule",
    "RuleEvaluationError",
    "Ruleset",
    "RulesetError",
    "RulesetTest",
    "TestResult",
    "TraceLevel",
    "ValidationReport",
    "canonical_json",
    "check_ruleset",
    "check_text",
    "compile_ruleset",
    "diff_rulesets",
    "dry_run",
    "fact_problems",
    "facts_bound_problem",
    "parse_ruleset",
    "ruleset_sha256",
]
