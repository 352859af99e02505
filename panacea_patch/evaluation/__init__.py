"""Evaluation: greedy generation, safety judges, safety and utility figures, reports.

```python
from panacea_patch.evaluation import EvalConfig, evaluate, format_report_table
report = evaluate(model, tokenizer, EvalConfig(judge="keyword"), reference=base_model)
print(format_report_table(report))
```
"""

from panacea_patch.evaluation.batching import AUTO_START, BatchSize, run_batched
from panacea_patch.evaluation.config import EvalConfig
from panacea_patch.evaluation.evaluate import evaluate
from panacea_patch.evaluation.generation import generate_answers, generate_texts
from panacea_patch.evaluation.judges import (
    JUDGE_CHOICES,
    GenerativeJudge,
    Judge,
    JudgeOptions,
    JudgeResult,
    KeywordJudge,
    ModelJudge,
    make_judge,
    parse_guard_output,
)
from panacea_patch.evaluation.report import (
    EvalReport,
    SampleRecord,
    compare_reports,
    format_report_table,
    write_samples,
)
from panacea_patch.evaluation.scoring import SCORERS, get_scorer
from panacea_patch.evaluation.utility import (
    KLResult,
    PerplexityResult,
    kl_to_reference,
    perplexity,
    reference_continuations,
)
from panacea_patch.evaluation.verdicts import (
    DEFAULT_REFUSAL_PHRASES,
    DEFAULT_REFUSAL_START_PHRASES,
    RefusalMatcher,
    Verdict,
    classify_answer,
    is_incoherent,
)

__all__ = [
    "AUTO_START",
    "DEFAULT_REFUSAL_PHRASES",
    "DEFAULT_REFUSAL_START_PHRASES",
    "JUDGE_CHOICES",
    "SCORERS",
    "BatchSize",
    "EvalConfig",
    "EvalReport",
    "GenerativeJudge",
    "Judge",
    "JudgeOptions",
    "JudgeResult",
    "KLResult",
    "KeywordJudge",
    "ModelJudge",
    "PerplexityResult",
    "RefusalMatcher",
    "SampleRecord",
    "Verdict",
    "classify_answer",
    "compare_reports",
    "evaluate",
    "format_report_table",
    "generate_answers",
    "generate_texts",
    "get_scorer",
    "is_incoherent",
    "kl_to_reference",
    "make_judge",
    "parse_guard_output",
    "perplexity",
    "reference_continuations",
    "run_batched",
    "write_samples",
]
