"""Alignment data: loaders, built-in sets, formatting, response-only masking and batching.

```python
pairs = load_pairs("builtin:harmful", role="harmful", split="optimize")
batches = build_batches(tokenizer, pairs, batch_size=8, max_length=256)
```
"""

from panacea_patch.data.batching import (
    Batch,
    batch_tokens,
    build_batches,
    build_generation_batches,
    collate,
    count_tokens,
    resolve_pad_token_id,
)
from panacea_patch.data.builtin import builtin_prompt_set, harmful_templates, harmful_vocabulary
from panacea_patch.data.formatting import (
    ALPACA_TEMPLATE,
    IGNORE_INDEX,
    EncodedPair,
    encode_pair,
    encode_prompt,
    format_prompt,
    has_chat_template,
)
from panacea_patch.data.pairs import (
    PROMPT_ALIASES,
    RESPONSE_ALIASES,
    Pair,
    Role,
    Split,
    data_digest,
    hash_split,
    load_pairs,
)

__all__ = [
    "ALPACA_TEMPLATE",
    "IGNORE_INDEX",
    "PROMPT_ALIASES",
    "RESPONSE_ALIASES",
    "Batch",
    "EncodedPair",
    "Pair",
    "Role",
    "Split",
    "batch_tokens",
    "build_batches",
    "build_generation_batches",
    "builtin_prompt_set",
    "collate",
    "count_tokens",
    "data_digest",
    "encode_pair",
    "encode_prompt",
    "format_prompt",
    "harmful_templates",
    "harmful_vocabulary",
    "has_chat_template",
    "hash_split",
    "load_pairs",
    "resolve_pad_token_id",
]
