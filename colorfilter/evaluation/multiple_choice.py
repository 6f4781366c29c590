"""Multiple-choice accuracy by rank classification, the paper's downstream metric (lm-eval style).

Each item is a JSON line `{"context": str, "choices": [str, ...], "label": int}`. A model picks the
choice with the highest log-likelihood given the context (`accuracy`), or the highest per character
of the choice (`accuracy_norm`, lm-eval's acc_norm). Contexts and choices are split into tokens as
lm-eval does: trailing spaces of the context move to the choice, and the choice's tokens are the
tail of the whole string's, so the boundary is tokenized as in running text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.errors import BadDataError
from colorfilter.io.config import StorageConfig
from colorfilter.io.readers import iter_lines


@dataclass(frozen=True)
class McItem:
    """One tokenized item: each choice as (context tokens, choice tokens), within seq_len."""

    choices: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    choice_chars: tuple[int, ...]
    label: int


def _record(path: str, line_no: int, line: bytes) -> tuple[str, list[str], int]:
    """(context, choices, label) of one line, or BadDataError naming the file and line."""
    where = f"{path}:{line_no}"
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise BadDataError(f"{where}: not a JSON object ({exc})") from exc
    if not isinstance(record, dict):
        raise BadDataError(f"{where}: not a JSON object")
    context, choices, label = record.get("context"), record.get("choices"), record.get("label")
    if not isinstance(context, str) or not context:
        raise BadDataError(f"{where}: `context` must be a non-empty string")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise BadDataError(f"{where}: `choices` must be a list of two or more non-empty strings")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise BadDataError(f"{where}: `label` must be an index into `choices`, got {label!r}")
    return context, choices, label


def encode_pair(tokenizer: Any, context: str, choice: str) -> tuple[list[int], list[int]]:
    """(context ids, choice ids) split as lm-eval does."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, choice = context[:-spaces], context[-spaces:] + choice
    whole = tokenizer(context + choice, add_special_tokens=False).input_ids
    head = tokenizer(context, add_special_tokens=False).input_ids
    return whole[: len(head)], whole[len(head) :]


def load_items(
    paths: Sequence[str | Path],
    tokenizer: Any,
    seq_len: int,
    storage: StorageConfig | None = None,
) -> list[McItem]:
    """Every item of the JSON-lines files (plain, .gz or .zst; local paths or s3/gs/hf/file URLs,
    read with `storage`'s options); contexts keep their last tokens when context + choice
    exceeds seq_len."""
    items = []
    for path in map(str, paths):
        for line_no, line in enumerate(iter_lines(path, storage), start=1):
            if not line.strip():
                continue
            context, choices, label = _record(path, line_no, line)
            pairs = []
            for choice in choices:
                context_ids, choice_ids = encode_pair(tokenizer, context, choice)
                if not context_ids:
                    raise BadDataError(f"{path}:{line_no}: the context has no tokens")
                if not choice_ids or len(choice_ids) >= seq_len:
                    raise BadDataError(
                        f"{path}:{line_no}: a choice has {len(choice_ids)} tokens; "
                        f"it needs 1 to {seq_len - 1} (seq_len {seq_len})"
                    )
                keep = seq_len - len(choice_ids)
                pairs.append((tuple(context_ids[-keep:]), tuple(choice_ids)))
            items.append(McItem(tuple(pairs), tuple(len(c) for c in choices), label))
    if not items:
        raise BadDataError(f"no multiple-choice items in {list(map(str, paths))}")
    return items


def items_digest(items: Iterable[McItem]) -> str:
    """What decides the accuracy besides the model: every item's tokens and label."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(repr((item.choices, item.choice_chars, item.label)).encode())
    return digest.hexdigest()[:16]


def choice_logprobs(
    model: Any, items: Sequence[McItem], pad_id: int, batch_size: int, device: Any
) -> list[np.ndarray]:
    """Sum of the log-probabilities of each choice's tokens given its context, per item.

    Sequences are right-padded: with causal attention, pads after a sequence cannot change it.
    Log-softmax runs one row at a time, so a batch never holds [B, L, V] fp32 log-probs.
    """
    import torch

    pairs = [(i, pair) for i, item in enumerate(items) for pair in item.choices]
    sums = np.zeros(len(pairs), dtype=np.float64)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            seqs = [list(ctx) + list(choice) for _, (ctx, choice) in batch]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
            for row, seq in enumerate(seqs):
                ids[row, : len(seq)] = torch.tensor(seq)
            logits = model(input_ids=ids.to(device)).logits
            for row, (_, (ctx, choice)) in enumerate(batch):
                first = len(ctx)  # position of the first choice token
                targets = ids[row, first : first + len(choice)].to(logits.device)
                log_probs = logits[row, first - 1 : first - 1 + len(choice)].float()
                log_probs = log_probs.log_softmax(-1)
                sums[start + row] = log_probs.gather(-1, targets[:, None]).sum().item()
    out, offset = [], 0
    for item in items:
        out.append(sums[offset : offset + len(item.choices)])
        offset += len(item.choices)
    return out


def accuracy(
    model: Any, items: Sequence[McItem], pad_id: int, batch_size: int, device: Any
) -> dict[str, float]:
    """Share of items whose label has the highest log-likelihood (and per character)."""
    scores = choice_logprobs(model, items, pad_id, batch_size, device)
    hits = [int(np.argmax(s)) == item.label for s, item in zip(scores, items, strict=True)]
    norm_hits = [
        int(np.argmax(s / np.asarray(item.choice_chars))) == item.label
        for s, item in zip(scores, items, strict=True)
    ]
    return {
        "mc_accuracy": float(np.mean(hits)),
        "mc_accuracy_norm": float(np.mean(norm_hits)),
        "mc_items": len(items),
    }
