"""The paper's in-fine-tuning Panacea: ``PanaceaTrainer`` and ``panacea-patch finetune``.

```python
from panacea_patch.training import PanaceaArguments, PanaceaTrainer, finetune

trainer = PanaceaTrainer(model=model, args=training_args, train_dataset=ds, data_collator=collate,
                         harmful_batches=batches, panacea=PanaceaArguments(rho=1.0, lam=1e-3))
trainer.train()

result = finetune("org/base", "out/", train="data.jsonl", lora=True)   # the whole run
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import FinetuneConfig

__all__ = [
    "FinetuneConfig",
    "FinetuneJob",
    "FinetuneResult",
    "PanaceaArguments",
    "PanaceaTrainer",
    "StepRecord",
    "finetune",
]

if TYPE_CHECKING:
    from .job import FinetuneJob, FinetuneResult, finetune
    from .trainer import PanaceaArguments, PanaceaTrainer, StepRecord

_LAZY = {
    "FinetuneJob": "job",
    "FinetuneResult": "job",
    "finetune": "job",
    "PanaceaArguments": "trainer",
    "PanaceaTrainer": "trainer",
    "StepRecord": "trainer",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that the CLI's --help does not import transformers' Trainer.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
