"""CI gates: threshold and baseline rules over a run's metrics -> pass / fail / error.

Rules come from a plan's `[gates]` table or a separate TOML file (see docs/gates.md)::

    [gates]
    alpha = 0.05                       # default significance level
    rules = [
      "accuracy{model=digits_cnn} >= 0.9",
      "robust_accuracy{attack=pgd_linf,eps=0.1} >= 0.7",
      "accuracy{model=digits_cnn} max_drop 0.02",              # against --baseline
      "mse{model=diabetes_mlp} max_rel_drop 0.05 significant test=bootstrap",
      {metric = "accuracy", tags = {model = "digits_cnn"}, max_drop = 0.0, test = "mcnemar", alpha = 0.05},
    ]

String grammar: ``METRIC{key=value,...} OP NUMBER [significant] [test=NAME] [alpha=X] [n_boot=N]``
with OP one of ``>= <= > < ==`` (absolute bound) or ``max_drop`` / ``max_rel_drop`` (change
against a baseline run). In the braces, ``model``, ``suite`` and ``dataset`` select the
result; every other key must equal a metric tag (numbers compare numerically: ``eps=0.1``).

"Worse" follows the metric's ``higher_is_better``: drop = baseline - candidate when higher
is better, candidate - baseline when lower is better. A baseline rule fails when the drop
exceeds the limit; with ``significant`` (or a ``test``) it fails only when, in addition,
the drop is statistically significant: McNemar (per-example correctness, p < alpha),
Welch's t-test (per-example scores, p < alpha) or the paired bootstrap (the
(1 - alpha) percentile CI of the drop lies entirely above the limit). The default test is
McNemar for 0/1 per-example values and the paired bootstrap otherwise.

Exit codes (`gate_exit_code`): 0 every rule passed; 2 a rule is unusable as written
(bad syntax, unknown operator, several metrics match, no direction for a drop rule, no
baseline given); else 1 if a rule failed; else 3 if a rule could not be evaluated
(missing or null metric, missing per-example data). A rule naming a metric the run does
not have is an error, never a pass.
"""

from workbench.gates.ci import format_outcome, gate_main, github_annotations
from workbench.gates.evaluate import (GateOutcome, RuleOutcome, evaluate_gates, find_metrics, gate_exit_code,
                                      load_per_example)
from workbench.gates.rules import (ABSOLUTE_OPS, BASELINE_OPS, DEFAULT_ALPHA, DEFAULT_N_BOOT, EQ_TOL, EXIT_FAIL,
                                   EXIT_PASS, EXIT_UNEVALUATED, EXIT_USAGE, GATES_KEYS, OPS, RULE_KEYS, SELECTORS,
                                   TESTS, GateConfig, GateRule, gates_from_run, load_gates_file, parse_gates,
                                   parse_rule)

__all__ = [
    "ABSOLUTE_OPS", "BASELINE_OPS", "DEFAULT_ALPHA", "DEFAULT_N_BOOT", "EQ_TOL", "EXIT_FAIL", "EXIT_PASS",
    "EXIT_UNEVALUATED", "EXIT_USAGE", "GATES_KEYS", "OPS", "RULE_KEYS", "SELECTORS", "TESTS", "GateConfig",
    "GateOutcome", "GateRule", "RuleOutcome", "evaluate_gates", "find_metrics", "format_outcome", "gate_exit_code",
    "gate_main", "gates_from_run", "github_annotations", "load_gates_file", "load_per_example", "parse_gates",
    "parse_rule",
]
