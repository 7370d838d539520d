"""The ruleset language (parse, check, canonical form, diff) and its two engines (durable_rules, Python).

Pure: nothing here touches a database, a network, a file or another process; it is given ruleset text
and facts and answers with documents, problems and evaluations. Everything other parts need is imported
from here; see docs/rulesets.md for the language.
"""

from service.rules.language.canonical import canonical_json, diff_rulesets, ruleset_sha256
from service.rules.language.checks import TestResult, ValidationReport, run_test, static_report
from service.rules.language.compiler import ENGINES, Engine, compile_ruleset
from service.rules.language.document import Rule, Ruleset, RulesetTest, parse_ruleset
from service.rules.language.evaluation import Evaluation, Evaluator, TraceLevel
from service.rules.language.facts import fact_problems, facts_bound_problem
from service.rules.language.kinds import FACT_CATALOG, RESULT_FIELDS
from service.rules.language.problems import Problem, RuleEvaluationError, RulesetError

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
    "compile_ruleset",
    "diff_rulesets",
    "fact_problems",
    "facts_bound_problem",
    "parse_ruleset",
    "ruleset_sha256",
    "run_test",
    "static_report",
]
