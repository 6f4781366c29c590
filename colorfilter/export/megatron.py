"""Megatron-LM indexed datasets: `PREFIX.bin` (token ids back to back) and `PREFIX.idx`.

The `.idx` layout, as `megatron/core/datasets/indexed_dataset.py` writes and reads it (checked
with megatron-core 0.16.1's own `IndexedDataset` in tests/export), little-endian:
  b"MMIDIDX\\x00\\x00" (9 bytes), uint64 version = 1, uint8 dtype code (its `DType` enum:
  uint16 = 8, int32 = 4), uint64 sequence count, uint64 document count (the length of the
  document index array), int32 tokens per sequence, int64 byte offset of each sequence in
  `.bin`, int64 document indices (the sequence index where each document starts, then the
  sequence count: [0, 1, ..., n] when every sequence is its own document).

How a selection becomes indexed datasets:
- One prefix per selection shard, `OUT/<shard stem>` (so each is its own resumable unit), listed
  in order in `OUT/data_paths.txt`. Megatron takes the list as `--data-path P1 P2 ...` or
  `--data-args-path OUT/data_paths.txt`; with no weights it blends the prefixes by their sizes,
  each used whole (`get_blend_from_list`, `BlendedMegatronDatasetBuilder`).
  `tools/merge_datasets.py` of Megatron-LM merges them into one prefix if you prefer.
- Order: shards in name order, sequences in row order (the selection's seeded order, as in its
  `indices.npy`). Megatron's GPTDataset shuffles documents and packs them into
  `seq_length + 1`-token samples on its own; the export keeps the selection's order so that
  reading the prefixes in order gives the selection back.
- Each chunk is one sequence and one document (size = its token count; a short chunk, the last
  of an input file, is just a shorter document). GPTDataset shuffles and packs documents, so
  the chunk, the unit CoLoR-Filter scored and selected, is the unit it shuffles.
- EOD: none appended. Megatron's `preprocess_data.py --append-eod` ends each *document* with
  one; here a document is a chunk cut in the middle of text, and the real document ends are
  already inside the chunks as EOS tokens. One after every chunk would be a false document end
  every seq_len tokens (which `--reset-attention-mask` / `--eod-mask-loss` would act on).
- dtype: uint16 when every id fits (vocabulary <= 65,536), else int32: Megatron's DType has
  no uint32, and Megatron itself writes int32 for vocabularies of 65,500 and more.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from colorfilter.export.outputs import UINT16_IDS, OutputFile
from colorfilter.export.source import ShardTokens
from colorfilter.io.location import Location

NAME = "megatron"
INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}  # Megatron's DType enum
EOS_RULE = ("none appended: each chunk is one sequence and one document, holding the EOS tokens "
            "that end documents inside it (no EOD after each chunk)")


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= UINT16_IDS else np.int32)


def index_parts(lengths: np.ndarray, dtype: np.dtype) -> list[Any]:
    """The `.idx` file of sequences with these token counts, each its own document."""
    count = len(lengths)
    sizes = lengths.astype(np.int32)
    pointers = np.zeros(count, dtype=np.int64)
    if count:
        np.cumsum(lengths[:-1] * dtype.itemsize, out=pointers[1:])
    documents = np.arange(count + 1, dtype=np.int64)
    header = (INDEX_HEADER + struct.pack("<Q", INDEX_VERSION)
              + struct.pack("<B", DTYPE_CODES[dtype])
              + struct.pack("<Q", count) + struct.pack("<Q", len(documents)))
    return [header, sizes, pointers, documents]


def shard_files(
    stem: str, shard: ShardTokens, tokens: np.ndarray, seq_len: int
) -> list[OutputFile]:
    """`<stem>.bin` and `<stem>.idx`: every row one sequence and one document."""
    count, total = len(shard.lengths), int(tokens.size)
    short = int(np.count_nonzero(shard.lengths < seq_len))
    return [
        OutputFile(f"{stem}.bin", [tokens], sequences=count, tokens=total,
                   extra={"short_sequences": short}),
        OutputFile(f"{stem}.idx", index_parts(shard.lengths, tokens.dtype)),
    ]


def data_paths(out: Location, names: list[str]) -> list[str]:
    """Every prefix, in order: Megatron's `--data-path` list."""
    return [out.join(name.removesuffix(".bin")).url for name in names if name.endswith(".bin")]


def summary(files: list[dict[str, Any]], seq_len: int, dtype: np.dtype) -> dict[str, Any]:
    """How to point Megatron-LM at the export."""
    return {
        "dataset": "megatron.core.datasets.indexed_dataset.IndexedDataset (GPTDataset)",
        "data_path": "data_paths.txt: --data-args-path OUT/data_paths.txt "
                     "(or its prefixes as --data-path, no weights)",
        "dtype_code": DTYPE_CODES[dtype],
        "documents": sum(f["sequences"] for f in files),
        "short_sequences": sum(f["extra"].get("short_sequences", 0) for f in files),
        "sequence_length_hint": seq_len,
    }
