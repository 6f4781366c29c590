"""Token ids back to text for the released `text` column, exactly (no clean-up)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from colorfilter.io.cache import source_url
from colorfilter.io.faults import reading


def load_decoder(tokenizer_dir: str | Path) -> Callable[[list[list[int]]], list[str]]:
    """A batch decoder that keeps special tokens and does no clean-up (text = the exact tokens).

    A fast tokenizer folder is decoded with its tokenizer.json through `tokenizers` (the same
    backend `AutoTokenizer` wraps, without importing transformers/torch); others via transformers.
    """
    tokenizer_json = Path(tokenizer_dir) / "tokenizer.json"
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        with reading(tokenizer_json, name=source_url(tokenizer_json)):  # a torn file: its name
            backend = Tokenizer.from_file(str(tokenizer_json))
        return lambda seqs: backend.decode_batch(seqs, skip_special_tokens=False)
    from transformers import AutoTokenizer

    with reading(tokenizer_dir, name=source_url(tokenizer_dir)):
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return lambda seqs: tokenizer.batch_decode(
        seqs, skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
