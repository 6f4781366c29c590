"""Multiple-choice rank classification: tokenization, exact log-likelihoods, accuracy, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from colorfilter.errors import BadDataError
from colorfilter.evaluation.multiple_choice import (
    McItem,
    accuracy,
    choice_logprobs,
    encode_pair,
    items_digest,
    load_items,
)

REPO = Path(__file__).resolve().parents[2]
SEQ_LEN = 32


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(REPO / "data" / "sample" / "tokenizer"))


@pytest.fixture(scope="module")
def model(tokenizer):
    from colorfilter.models.presets import build_model

    return build_model("micro", len(tokenizer), SEQ_LEN, seed=3, pad_token_id=0)


def _write(path: Path, records: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_encode_pair_splits_the_whole_string_as_lm_eval_does(tokenizer) -> None:
    context, choice = "She looked at Captain Wentworth ", "and smiled."
    context_ids, choice_ids = encode_pair(tokenizer, context, choice)
    whole = tokenizer(context + choice, add_special_tokens=False).input_ids
    assert context_ids + choice_ids == whole
    assert context_ids == tokenizer(context.rstrip(), add_special_tokens=False).input_ids
    assert tokenizer.decode(choice_ids) == " and smiled."


def test_choice_logprobs_match_one_sequence_at_a_time(tokenizer, model, tmp_path) -> None:
    import torch

    records = [
        {
            "context": "It was a fine morning",
            "choices": [" in Bath.", " at sea.", " x"],
            "label": 0,
        },
        {"context": "Anne said nothing; she", "choices": [" smiled", " wept bitterly"], "label": 1},
    ]
    items = load_items([_write(tmp_path / "mc.jsonl", records)], tokenizer, SEQ_LEN)
    got = choice_logprobs(model, items, pad_id=0, batch_size=2, device="cpu")
    for item, sums in zip(items, got, strict=True):
        for (ctx, choice), value in zip(item.choices, sums, strict=True):
            ids = torch.tensor([list(ctx) + list(choice)])
            with torch.inference_mode():
                log_probs = model(input_ids=ids).logits[0].log_softmax(-1)
            want = sum(float(log_probs[len(ctx) - 1 + j, t]) for j, t in enumerate(choice))
            assert value == pytest.approx(want, abs=1e-4)
    assert [len(s) for s in got] == [3, 2]


def test_accuracy_follows_the_highest_log_likelihood(tokenizer, model, tmp_path) -> None:
    records = [
        {"context": f"Chapter {i}. The {w}", "choices": [" house.", " sea", " letter came"]}
        for i, w in enumerate(["Admiral", "Musgroves", "Elliots", "Crofts"])
    ]
    for record in records:
        record["label"] = 0
    items = load_items([_write(tmp_path / "mc.jsonl", records)], tokenizer, SEQ_LEN)
    scores = choice_logprobs(model, items, pad_id=0, batch_size=4, device="cpu")
    best = [McItem(it.choices, it.choice_chars, int(np.argmax(s))) for it, s in zip(items, scores)]
    worst = [McItem(it.choices, it.choice_chars, int(np.argmin(s))) for it, s in zip(items, scores)]
    assert accuracy(model, best, 0, 3, "cpu")["mc_accuracy"] == 1.0
    assert accuracy(model, worst, 0, 3, "cpu")["mc_accuracy"] == 0.0
    per_char = [s / np.asarray(it.choice_chars) for it, s in zip(items, scores)]
    best_norm = [
        McItem(it.choices, it.choice_chars, int(np.argmax(p))) for it, p in zip(items, per_char)
    ]
    result = accuracy(model, best_norm, 0, 3, "cpu")
    assert result["mc_accuracy_norm"] == 1.0 and result["mc_items"] == 4
    assert items_digest(best) != items_digest(worst)


def test_long_contexts_keep_their_last_tokens(tokenizer, tmp_path) -> None:
    record = {"context": "word " * 100 + "end", "choices": [" one", " two"], "label": 1}
    (item,) = load_items([_write(tmp_path / "mc.jsonl", [record])], tokenizer, SEQ_LEN)
    for ctx, choice in item.choices:
        assert len(ctx) + len(choice) == SEQ_LEN
        assert tokenizer.decode(list(ctx)).endswith("word end")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not a JSON object"),
        (json.dumps({"context": "a", "choices": ["b"], "label": 0}), "two or more"),
        (json.dumps({"context": "a", "choices": ["b", "c"], "label": 2}), "index into"),
        (json.dumps({"context": "", "choices": ["b", "c"], "label": 0}), "non-empty string"),
        (json.dumps({"context": "a", "choices": ["b", "x " * 40], "label": 0}), "tokens"),
    ],
)
def test_bad_items_name_the_file_and_line(tokenizer, tmp_path, line, message) -> None:
    good = json.dumps({"context": "a", "choices": [" b", " c"], "label": 0})
    path = _write(tmp_path / "mc.jsonl", [good, "", line])
    with pytest.raises(BadDataError, match=rf"mc\.jsonl:3: .*{message}"):
        load_items([path], tokenizer, SEQ_LEN)
