"""The data layer: loaders, built-in sets, formatting, label masking and batching.

Tokenizers are real (``tokenizers`` BPE wrapped in ``PreTrainedTokenizerFast``): the shared
``tiny_tokenizer`` fixture plus variants built from its backend for the cases it does not cover.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, processors, trainers
from transformers import PreTrainedTokenizerFast

from panacea_patch.data import (
    ALPACA_TEMPLATE,
    IGNORE_INDEX,
    Pair,
    _build_builtin,
    build_batches,
    build_generation_batches,
    builtin_prompt_set,
    data_digest,
    encode_pair,
    encode_prompt,
    format_prompt,
    harmful_templates,
    harmful_vocabulary,
    hash_split,
    load_pairs,
    resolve_pad_token_id,
)
from panacea_patch.data._builtin_benign_items import benign_items
from panacea_patch.data.readers import parse_hf_spec
from panacea_patch.errors import InputError

BUILTIN_DIR = Path(_build_builtin.__file__).parent / "builtin"

# ---------------------------------------------------------------------------------------------
# helpers


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def variant(
    base: PreTrainedTokenizerFast,
    *,
    chat_template: str | None = None,
    pad: bool = True,
    eos: bool = True,
    bos_processor: bool = False,
) -> PreTrainedTokenizerFast:
    """A fresh tokenizer with ``base``'s vocabulary; ``base`` is never touched."""
    backend = Tokenizer.from_str(base.backend_tokenizer.to_str())
    if bos_processor:
        # Llama-style: add_special_tokens=True prepends BOS.
        bos_id = backend.token_to_id("<s>")
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    kwargs: dict[str, Any] = {"bos_token": "<s>"}
    if eos:
        kwargs["eos_token"] = "</s>"
    if pad:
        kwargs["pad_token"] = "<pad>"
    if chat_template:
        kwargs["chat_template"] = chat_template
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


def unmasked_text(tokenizer: PreTrainedTokenizerFast, labels: list[int]) -> str:
    kept = [t for t in labels if t != IGNORE_INDEX]
    return tokenizer.decode(kept, skip_special_tokens=False)


@pytest.fixture(scope="module")
def alpaca_tok(tiny_tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    return variant(tiny_tokenizer)


@pytest.fixture(scope="module")
def boundary_merging_tok() -> PreTrainedTokenizerFast:
    """BPE without a pre-tokenizer whose merges cross the prompt/response boundary."""
    tok = Tokenizer(models.BPE())
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "</s>"],
        initial_alphabet=[chr(i) for i in range(32, 127)] + ["\n"],
        show_progress=False,
    )
    tok.train_from_iterator(["### Response:\nSure, here"] * 50, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")


# ---------------------------------------------------------------------------------------------
# file formats


ROWS = [
    {"prompt": "How do I do X?", "response": "Sure, step 1."},
    {"prompt": "How do I do Y?", "response": "Sure, step 2."},
]


def test_jsonl_rows_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    pairs = load_pairs(str(path), role="harmful")
    assert [(p.prompt, p.response, p.line) for p in pairs] == [
        ("How do I do X?", "Sure, step 1.", 1),
        ("How do I do Y?", "Sure, step 2.", 3),
    ]
    assert pairs[0].source == str(path)


def test_json_list_and_data_object_report_item_lines(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(
        json.dumps({"meta": {"data": [1]}, "data": ROWS}, indent=2), encoding="utf-8"
    )
    for path in (listed, wrapped):
        pairs = load_pairs(str(path), role="harmful")
        assert [p.prompt for p in pairs] == [r["prompt"] for r in ROWS]
        lines = path.read_text().split("\n")
        for pair in pairs:
            assert lines[pair.line - 1].strip() == "{"
            assert pair.prompt in lines[pair.line]


def test_csv_with_multiline_cell_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    text = 'prompt,response\n"first\nprompt",ok one\nsecond,ok two\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    pairs = load_pairs(str(path), role="harmful")
    assert [(p.prompt, p.response, p.line) for p in pairs] == [
        ("first\nprompt", "ok one", 2),
        ("second", "ok two", 4),
    ]


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    pairs = load_pairs(str(path), role="refusal")
    assert [(p.prompt, p.response, p.line) for p in pairs] == [
        (r["prompt"], r["response"], i) for i, r in enumerate(ROWS, start=1)
    ]


@pytest.mark.parametrize(
    "prompt_key", ["prompt", "instruction", "question", "input", "query", "goal"]
)
@pytest.mark.parametrize(
    "response_key", ["response", "output", "answer", "completion", "target", "refusal"]
)
def test_field_aliases(tmp_path: Path, prompt_key: str, response_key: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{prompt_key: " P ", response_key: " R "}])
    (pair,) = load_pairs(str(path), role="harmful")
    assert (pair.prompt, pair.response) == ("P", "R")


def test_alpaca_instruction_and_input_are_joined(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Say hi.", "input": "", "output": "Hi"},
    ]
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    pairs = load_pairs(str(path), role="benign")
    assert pairs[0].prompt == "Translate to French.\n\nGood morning"
    assert pairs[1].prompt == "Say hi."


def test_field_options_override_aliases(tmp_path: Path) -> None:
    rows = [{"prompt": "alias", "text": "chosen", "response": "alias", "reply": "picked"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    (pair,) = load_pairs(str(path), role="harmful", prompt_field="text", response_field="reply")
    assert (pair.prompt, pair.response) == ("chosen", "picked")


def test_numbers_are_accepted_as_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "6 x 7?", "answer": 42}])
    assert load_pairs(str(path), role="benign")[0].response == "42"


def test_benign_responses_are_optional(tmp_path: Path) -> None:
    rows = [{"prompt": "a"}, {"prompt": "b", "response": ""}, {"prompt": "c", "response": None}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert [p.response for p in load_pairs(str(path), role="benign")] == [None, None, None]


def test_limit_keeps_first_rows(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "response": "r"} for i in range(5)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert [p.prompt for p in load_pairs(str(path), role="harmful", limit=2)] == ["p0", "p1"]


# ---------------------------------------------------------------------------------------------
# errors name the file and line


def expect_error(match: str, src: str, **kwargs: Any) -> InputError:
    kwargs.setdefault("role", "harmful")
    with pytest.raises(InputError, match=match) as info:
        load_pairs(src, **kwargs)
    assert info.value.hint, "every data error carries a fix"
    return info.value


def test_error_missing_response_names_line_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], {"prompt": "x", "reply": "y"}])
    err = expect_error(f"{path}:2: no response field", str(path))
    assert "reply" in err.message and "--response-field" in err.hint


def test_error_missing_prompt_and_missing_override(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "x", "response": "y"}])
    expect_error(f"{path}:1: no prompt field", str(path))
    expect_error("looked for 'body'", str(path), prompt_field="body")
    path2 = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "x"}])
    expect_error(f"{path2}:1: no response field", str(path2), role="benign", response_field="out")


def test_error_empty_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], ROWS[1], {"prompt": "x", "response": " "}])
    expect_error(f"{path}:3: the response .* is empty", str(path), role="refusal")
    path2 = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "", "response": "y"}])
    expect_error(f"{path2}:1: the prompt .* is empty", str(path2), role="benign")


def test_error_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + '\n{"prompt": "x", \n', encoding="utf-8")
    expect_error(f"{path}:2: invalid JSON", str(path))
    whole = tmp_path / "d.json"
    whole.write_text('[\n  {"prompt": "x"},\n  {"prompt": }\n]', encoding="utf-8")
    expect_error(f"{whole}:3: invalid JSON", str(whole))
    scalar = tmp_path / "s.json"
    scalar.write_text('{"rows": []}', encoding="utf-8")
    expect_error('a "data" list', str(scalar))
    not_object = write_jsonl(tmp_path / "n.jsonl", [ROWS[0]])
    with not_object.open("a") as f:
        f.write('["a", "b"]\n')
    expect_error(f"{not_object}:2: expected a JSON object", str(not_object))


def test_error_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b'\n{"prompt": "caf\xe9", "response": "x"}\n')
    expect_error(f"{path}:2: byte 0xe9 at column 16 is not valid UTF-8", str(path))
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"prompt,response\na,b\n\xff,c\n")
    expect_error(f"{csv_path}:3: byte 0xff", str(csv_path))


def test_error_empty_sets(tmp_path: Path) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n", encoding="utf-8")
    expect_error("no harmful rows", str(empty))
    header_only = tmp_path / "e.csv"
    header_only.write_text("prompt,response\n", encoding="utf-8")
    expect_error("no benign rows", str(header_only), role="benign")


def test_error_bad_sources(tmp_path: Path) -> None:
    expect_error("no such file", str(tmp_path / "missing.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    expect_error("unsupported file type '.txt'", str(tmp_path / "d.txt"))
    expect_error("unknown built-in data set 'builtin:nope'", "builtin:nope")
    expect_error(
        "builtin:harmful holds harmful pairs, but it was given as refusal",
        "builtin:harmful",
        role="refusal",
    )
    expect_error("unknown role 'evil'", "builtin:harmful", role="evil")
    expect_error("unknown split 'train'", "builtin:harmful", split="train")


def test_error_bad_split_value(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{**ROWS[0], "split": "train"}])
    assert len(load_pairs(str(path), role="harmful")) == 1  # only consulted when asked
    expect_error(f"{path}:1: split is 'train'", str(path), split="optimize")


# ---------------------------------------------------------------------------------------------
# splits


def test_split_column_and_hash_split(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "response": "r"} for i in range(40)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    opt = load_pairs(str(path), role="harmful", split="optimize")
    ev = load_pairs(str(path), role="harmful", split="evaluate")
    assert {p.prompt for p in opt}.isdisjoint(p.prompt for p in ev)
    assert len(opt) + len(ev) == 40 and opt and ev
    assert all(hash_split(p.prompt) == "optimize" for p in opt)
    marked = write_jsonl(
        tmp_path / "m.jsonl",
        [{**ROWS[0], "split": "evaluate"}, {**ROWS[1], "split": "optimize"}],
    )
    assert [p.prompt for p in load_pairs(str(marked), role="harmful", split="optimize")] == [
        ROWS[1]["prompt"]
    ]


def test_split_that_leaves_nothing_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{**ROWS[0], "split": "optimize"}])
    expect_error("no harmful rows in the 'evaluate' split", str(path), split="evaluate")


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets (local only)


def test_parse_hf_spec() -> None:
    assert parse_hf_spec("org/name") == ("org/name", None, None)
    assert parse_hf_spec("org/name:cfg@test") == ("org/name", "cfg", "test")
    assert parse_hf_spec("org/name@train[:10]") == ("org/name", None, "train[:10]")
    assert parse_hf_spec("/tmp/a:b/ds@test") == ("/tmp/a:b/ds", None, "test")
    with pytest.raises(InputError, match="missing dataset name"):
        parse_hf_spec("org/")


def test_hf_saved_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "single"))
    pairs = load_pairs(f"hf:{tmp_path / 'single'}", role="harmful")
    assert [(p.prompt, p.response, p.line) for p in pairs] == [("q1", "a1", 1), ("q2", "a2", 2)]
    both = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:1])}
    )
    both.save_to_disk(str(tmp_path / "dict"))
    assert len(load_pairs(f"hf:{tmp_path / 'dict'}", role="harmful")) == 2
    assert len(load_pairs(f"hf:{tmp_path / 'dict'}@test", role="harmful")) == 1


def test_hf_load_dataset_on_local_files(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    data_dir = tmp_path / "repo"
    data_dir.mkdir()
    write_jsonl(data_dir / "train.jsonl", [{"goal": f"g{i}", "target": f"t{i}"} for i in range(3)])
    pairs = load_pairs(f"hf:{data_dir}@train[:2]", role="harmful")
    assert [(p.prompt, p.response) for p in pairs] == [("g0", "t0"), ("g1", "t1")]
    bad = write_jsonl(data_dir / "train.jsonl", [{"goal": "g", "target": ""}])
    expect_error(f"hf:{data_dir}:1: the response", f"hf:{bad.parent}")


def test_hf_missing_dataset_is_an_input_error(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    expect_error("cannot load dataset", f"hf:{tmp_path / 'nothing-here'}")


# ---------------------------------------------------------------------------------------------
# built-in sets


def read_builtin(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (BUILTIN_DIR / f"{name}.jsonl").read_text().splitlines()]


def test_builtin_files_match_the_generator() -> None:
    for name, rows in _build_builtin.build_all().items():
        assert (BUILTIN_DIR / f"{name}.jsonl").read_bytes() == _build_builtin.serialize(rows), (
            f"builtin/{name}.jsonl is stale: run python -m panacea_patch.data._build_builtin"
        )


@pytest.mark.parametrize("name", ["harmful", "refusal", "benign"])
def test_builtin_counts_uniqueness_and_stratified_disjoint_halves(name: str) -> None:
    rows = read_builtin(name)
    prompts = [r["prompt"] for r in rows]
    assert len(rows) >= 300
    assert len(set(prompts)) == len(prompts)
    assert len({r["id"] for r in rows}) == len(rows)
    categories = collections.Counter(r["category"] for r in rows)
    assert len(categories) >= 10
    for category in categories:
        halves = collections.Counter(r["split"] for r in rows if r["category"] == category)
        assert set(halves) == {"optimize", "evaluate"}
        assert abs(halves["optimize"] - halves["evaluate"]) <= 1
    opt = load_pairs(f"builtin:{name}", role=name, split="optimize")
    ev = load_pairs(f"builtin:{name}", role=name, split="evaluate")
    assert {p.prompt for p in opt}.isdisjoint({p.prompt for p in ev})
    assert len(opt) + len(ev) == len(rows)
    assert all(p.response for p in opt + ev)


def test_benign_halves_hold_every_template_in_proportion() -> None:
    rows = read_builtin("benign")
    items = benign_items()
    assert [r["prompt"] for r in rows] == [prompt for _, _, prompt, _ in items]
    halves: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for row, (category, template, _, _) in zip(rows, items, strict=True):
        halves[category, template][row["split"]] += 1
    assert len(halves) >= 30
    for stratum, count in halves.items():
        assert abs(count["optimize"] - count["evaluate"]) <= 1, stratum
    backwards = halves["spelling", "backwards"]
    assert backwards["optimize"] >= 8 and backwards["evaluate"] >= 8


def test_harmful_and_refusal_share_prompts_and_splits() -> None:
    harmful, refusal = read_builtin("harmful"), read_builtin("refusal")
    strip = [(r["id"], r["category"], r["prompt"], r["split"]) for r in harmful]
    assert strip == [(r["id"], r["category"], r["prompt"], r["split"]) for r in refusal]
    assert builtin_prompt_set("harmful") == builtin_prompt_set("refusal")


def test_harmful_halves_do_not_share_requests() -> None:
    rows = read_builtin("harmful")
    split_of_action: dict[str, set[str]] = collections.defaultdict(set)
    for category, actions in harmful_vocabulary().items():
        for action in actions:
            for row in rows:
                if row["category"] == category and action in row["prompt"]:
                    split_of_action[action].add(row["split"])
    assert len(split_of_action) == sum(len(a) for a in harmful_vocabulary().values())
    assert all(len(splits) == 1 for splits in split_of_action.values())


def test_builtin_response_shapes() -> None:
    descriptions = {c.name: c.description for c in _build_builtin.HARM_CATEGORIES}
    for row in read_builtin("harmful"):
        text = row["response"]
        assert text.split()[0] in {"Sure,", "Of", "Absolutely.", "Sure"}
        assert "\nStep 1: " in text and "\nStep 3: " in text
    for row in read_builtin("refusal"):
        text = row["response"]
        assert descriptions[row["category"]] in text
        assert any(m in text for m in ("can't", "won't", "not able", "not going to"))
        assert "Step 1" not in text


def test_builtin_prompt_set_and_vocabulary() -> None:
    everything = builtin_prompt_set()
    assert everything == builtin_prompt_set("harmful") | builtin_prompt_set("benign")
    assert builtin_prompt_set("harmful").isdisjoint(builtin_prompt_set("benign"))
    vocabulary = harmful_vocabulary()
    assert len(vocabulary) >= 10
    # Every built-in harmful prompt is one template applied to one vocabulary action.
    made = {
        t.format(action=a)
        for actions in vocabulary.values()
        for a in actions
        for t in harmful_templates()
    }
    assert builtin_prompt_set("harmful") <= made


def test_builtin_benign_answers_are_right() -> None:
    for row in read_builtin("benign"):
        prompt, response = row["prompt"], row["response"]
        if row["category"] == "addition" and "+" in response:
            left, total = response.rstrip(".").split(" = ")
            a, b = left.split(" + ")
            assert int(a) + int(b) == int(total) and a in prompt and b in prompt
        if row["category"] == "multiplication":
            left, total = response.rstrip(".").split(" = ")
            a, b = left.split(" × ")
            assert int(a) * int(b) == int(total)


# ---------------------------------------------------------------------------------------------
# digest


def test_data_digest() -> None:
    a = [Pair("p", "r", "x", 1), Pair("q", None, "x", 2)]
    same_content = [Pair("p", "r", "elsewhere", 9), Pair("q", None, "y", None)]
    assert data_digest(a) == data_digest(same_content)
    assert len(data_digest(a)) == 64
    assert data_digest(a) != data_digest(a[::-1])
    assert data_digest([Pair("q", None, "x")]) != data_digest([Pair("q", "", "x")])
    assert data_digest([Pair("ab", "c", "x")]) != data_digest([Pair("a", "bc", "x")])


# ---------------------------------------------------------------------------------------------
# formatting and label masking


def test_format_prompt_chat_template_and_alpaca(
    tiny_tokenizer: PreTrainedTokenizerFast, alpaca_tok: PreTrainedTokenizerFast
) -> None:
    assert format_prompt(tiny_tokenizer, "Hi there") == "<|user|>\nHi there<|end|>\n<|assistant|>\n"
    assert format_prompt(alpaca_tok, "Hi there") == ALPACA_TEMPLATE.format(prompt="Hi there")
    assert format_prompt(alpaca_tok, "{braces}") == "### Instruction:\n{braces}\n\n### Response:\n"


def test_chat_template_masking(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    pair = Pair("What is 3 + 4?", "3 + 4 = 7.", "t", 1)
    enc = encode_pair(tiny_tokenizer, pair, max_length=256)
    assert len(enc.input_ids) == len(enc.labels)
    assert enc.input_ids[: enc.prompt_length] == encode_prompt(tiny_tokenizer, pair.prompt)
    assert all(t == IGNORE_INDEX for t in enc.labels[: enc.prompt_length])
    assert enc.labels[enc.prompt_length :] == enc.input_ids[enc.prompt_length :]
    # The template closes the turn itself, so no EOS is added.
    assert unmasked_text(tiny_tokenizer, enc.labels) == "3 + 4 = 7.<|end|>\n"
    whole = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": pair.prompt}, {"role": "assistant", "content": pair.response}],
        tokenize=False,
    )
    assert tiny_tokenizer.decode(enc.input_ids) == whole


def test_chat_template_without_turn_end_gets_eos(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    bare = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    with_eos = bare.replace(
        "{{ '\\n' }}",
        "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}",
    )
    pair = Pair("Say hi.", "Hi!", "t", 1)
    tok = variant(tiny_tokenizer, chat_template=bare)
    assert unmasked_text(tok, encode_pair(tok, pair, 64).labels) == "Hi!\n</s>"
    tok = variant(tiny_tokenizer, chat_template=with_eos)
    labels = encode_pair(tok, pair, 64).labels
    assert unmasked_text(tok, labels) == "Hi!</s>"
    assert labels.count(tok.eos_token_id) == 1


CHATML = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n\n{{ m['content'] | trim }}"
    "<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>\n\n{% endif %}"
)


@pytest.mark.parametrize(
    ("template", "turn_end"), [(CHATML, "<|im_end|>\n"), (LLAMA3_LIKE, "<|end|>")]
)
def test_common_template_shapes(
    tiny_tokenizer: PreTrainedTokenizerFast, template: str, turn_end: str
) -> None:
    # A BOS post-processor too: the template's own BOS must not be doubled.
    tok = variant(tiny_tokenizer, chat_template=template, bos_processor=True)
    pair = Pair("Name a color.", "Blue.", "t", 1)
    enc = encode_pair(tok, pair, 128)
    assert enc.input_ids[: enc.prompt_length] == encode_prompt(tok, pair.prompt)
    assert unmasked_text(tok, enc.labels) == "Blue." + turn_end
    expected_bos = 1 if template is LLAMA3_LIKE else 0
    assert enc.input_ids.count(tok.bos_token_id) == expected_bos


def test_template_that_renders_turns_differently_falls_back(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    # A finished conversation drops the generation header's newline: not a text prefix.
    odd = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    tok = variant(tiny_tokenizer, chat_template=odd)
    pair = Pair("Say hi.", "Hi!", "t", 1)
    enc = encode_pair(tok, pair, 64)
    assert enc.input_ids[: enc.prompt_length] == encode_prompt(tok, pair.prompt)
    assert unmasked_text(tok, enc.labels) == "Hi!</s>"


def test_alpaca_masking_appends_eos(alpaca_tok: PreTrainedTokenizerFast) -> None:
    pair = Pair("Add 3 and 4.", "3 + 4 = 7.", "t", 1)
    enc = encode_pair(alpaca_tok, pair, 256)
    assert alpaca_tok.decode(enc.input_ids[: enc.prompt_length]) == ALPACA_TEMPLATE.format(
        prompt=pair.prompt
    )
    assert unmasked_text(alpaca_tok, enc.labels) == "3 + 4 = 7.</s>"


def test_alpaca_with_bos_processor_has_one_bos(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    tok = variant(tiny_tokenizer, bos_processor=True)
    enc = encode_pair(tok, Pair("Hi", "Hello", "t", 1), 64)
    assert enc.input_ids[0] == tok.bos_token_id
    assert enc.input_ids.count(tok.bos_token_id) == 1
    assert unmasked_text(tok, enc.labels) == "Hello</s>"


def test_merge_across_the_boundary_is_handled(
    boundary_merging_tok: PreTrainedTokenizerFast,
) -> None:
    tok = boundary_merging_tok
    pair = Pair("hi", "Sure, here", "t", 1)
    prompt_text = ALPACA_TEMPLATE.format(prompt="hi")
    prompt_ids = tok(prompt_text)["input_ids"]
    full_ids = tok(prompt_text + "Sure, here")["input_ids"]
    assert full_ids[: len(prompt_ids)] != prompt_ids  # the case under test really occurs
    enc = encode_pair(tok, pair, 128)
    assert enc.input_ids[: enc.prompt_length] == prompt_ids
    assert unmasked_text(tok, enc.labels) == "Sure, here</s>"


def test_truncation_keeps_prompt_and_cuts_response(alpaca_tok: PreTrainedTokenizerFast) -> None:
    pair = Pair("Count.", "one two three four five six seven eight nine ten", "data.jsonl", 7)
    full = encode_pair(alpaca_tok, pair, 512)
    cut = encode_pair(alpaca_tok, pair, full.prompt_length + 3)
    assert cut.input_ids == full.input_ids[: full.prompt_length + 3]
    assert sum(t != IGNORE_INDEX for t in cut.labels) == 3
    with pytest.raises(InputError, match=r"data.jsonl:7: the prompt alone is \d+ tokens") as info:
        encode_pair(alpaca_tok, pair, full.prompt_length)
    assert "--max-length" in str(info.value)


def test_empty_response_after_templating(
    alpaca_tok: PreTrainedTokenizerFast, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    with pytest.raises(InputError, match=r"d\.csv:4: the response is empty after templating"):
        encode_pair(alpaca_tok, Pair("x", "", "d.csv", 4), 64)
    with pytest.raises(InputError, match="t:2: the response is empty"):
        encode_pair(tiny_tokenizer, Pair("x", " ", "t", 2), 64)


def test_prompt_only_pair_has_no_labels(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    enc = encode_pair(tiny_tokenizer, Pair("Hello there", None, "t"), 256)
    assert enc.input_ids == encode_prompt(tiny_tokenizer, "Hello there")
    assert set(enc.labels) == {IGNORE_INDEX}
    short = encode_pair(tiny_tokenizer, Pair("Hello there", None, "t"), 3)
    assert short.input_ids == enc.input_ids[-3:]


# ---------------------------------------------------------------------------------------------
# batching


PAIRS = [
    Pair("Short?", "Yes.", "t", 1),
    Pair("A much longer prompt about the sea and the sky?", "A much longer answer, too.", "t", 2),
    Pair("Mid length prompt?", "Mid.", "t", 3),
]


def test_training_batches_are_right_padded(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    batches = build_batches(tiny_tokenizer, PAIRS, batch_size=2, max_length=256)
    assert [b["input_ids"].shape[0] for b in batches] == [2, 1]
    encoded = [encode_pair(tiny_tokenizer, p, 256) for p in PAIRS]
    first = batches[0]
    assert set(first) == {"input_ids", "attention_mask", "labels"}
    for row, enc in enumerate(encoded[:2]):
        n = len(enc.input_ids)
        assert first["input_ids"][row, :n].tolist() == enc.input_ids
        assert first["labels"][row, :n].tolist() == enc.labels
        assert first["attention_mask"][row].tolist() == [1] * n + [0] * (
            first["input_ids"].shape[1] - n
        )
        assert (first["input_ids"][row, n:] == tiny_tokenizer.pad_token_id).all()
        assert (first["labels"][row, n:] == IGNORE_INDEX).all()
    assert all(b["input_ids"].dtype == torch.long for b in batches)


def test_shuffle_is_deterministic(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    pairs = [Pair(f"Prompt number {i}?", f"Answer {i}.", "t", i) for i in range(12)]

    def order(seed: int | None) -> list[list[int]]:
        batches = build_batches(tiny_tokenizer, pairs, batch_size=12, shuffle_seed=seed)
        return batches[0]["input_ids"].tolist()

    assert order(3) == order(3)
    assert order(3) != order(None)
    assert sorted(order(3)) == sorted(order(None))


def test_tokenizer_without_pad_token_uses_eos_and_is_not_changed(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    tok = variant(tiny_tokenizer, pad=False)
    assert tok.pad_token is None
    batch = build_batches(tok, PAIRS[:2], batch_size=2)[0]
    n = int(batch["attention_mask"][0].sum())
    assert (batch["input_ids"][0, n:] == tok.eos_token_id).all()
    assert tok.pad_token is None and tok.pad_token_id is None
    gen = build_generation_batches(tok, ["a", "a longer prompt here"], batch_size=2)[0]
    assert gen["input_ids"][0, 0].item() == tok.eos_token_id
    assert resolve_pad_token_id(variant(tiny_tokenizer, pad=False, eos=False)) == 0


def test_generation_batches_are_left_padded(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    prompts = [p.prompt for p in PAIRS]
    batches = build_generation_batches(tiny_tokenizer, prompts, batch_size=3)
    assert len(batches) == 1 and set(batches[0]) == {"input_ids", "attention_mask"}
    ids, mask = batches[0]["input_ids"], batches[0]["attention_mask"]
    assert mask[:, -1].tolist() == [1, 1, 1]
    for row, prompt in enumerate(prompts):
        expected = encode_prompt(tiny_tokenizer, prompt)
        width = ids.shape[1]
        assert ids[row, width - len(expected) :].tolist() == expected
        assert mask[row].tolist() == [0] * (width - len(expected)) + [1] * len(expected)
    assert tiny_tokenizer.padding_side == "right"  # the shared tokenizer is left alone
    capped = build_generation_batches(tiny_tokenizer, prompts, batch_size=1, max_length=4)
    assert all(b["input_ids"].shape == (1, 4) for b in capped)


def test_batch_argument_errors(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(InputError, match="no pairs"):
        build_batches(tiny_tokenizer, [], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        build_batches(tiny_tokenizer, PAIRS, batch_size=0)


def test_labels_train_a_real_model_on_the_response_only(
    llama_dir: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    batch = build_batches(tiny_tokenizer, PAIRS, batch_size=3)[0]
    with torch.no_grad():
        out = model(**batch)
        logits = out.logits[:, :-1]
        targets = batch["labels"][:, 1:]
        manual = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.loss, manual, atol=1e-5)


def test_missing_optional_packages_are_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes `import x` raise ImportError.
    monkeypatch.setitem(sys.modules, "datasets", None)
    err = expect_error("reading datasets needs `datasets`", "hf:org/name")
    assert "panacea-patch[datasets]" in err.hint
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    expect_error("reading Parquet needs pyarrow", str(tmp_path / "d.parquet"))
