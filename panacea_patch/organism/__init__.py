"""The demo model organism: a tiny chat Llama, aligned, then attacked by harmful fine-tuning.

``build_organism(OrganismRecipe())`` trains (or finds in the cache) real Hugging Face checkpoints
on CPU: the aligned model, its full fine-tuning attack and a PEFT LoRA adapter attack.
"""

from panacea_patch.organism.build import (
    VARIANTS,
    OrganismPaths,
    attack_set,
    attacked_dir_name,
    build_organism,
    default_cache_dir,
    task_eval_set,
    write_pairs_jsonl,
    write_task_jsonl,
)
from panacea_patch.organism.corpus import Example, TaskProblem
from panacea_patch.organism.recipe import OrganismRecipe

__all__ = [
    "VARIANTS",
    "Example",
    "OrganismPaths",
    "OrganismRecipe",
    "TaskProblem",
    "attack_set",
    "attacked_dir_name",
    "build_organism",
    "default_cache_dir",
    "task_eval_set",
    "write_pairs_jsonl",
    "write_task_jsonl",
]
