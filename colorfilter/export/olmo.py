"""OLMo-core token files: each a flat, headerless array of token ids with a `.npy` suffix.

What OLMo-core reads (`olmo_core.data.numpy_dataset`, checked with ai2-olmo-core 3.0.0's own
`NumpyFSLDataset` and `olmo_core.data.utils.load_array_slice` in tests/export): every path is a
raw memory map of uint8/16/32/64 ids with no numpy header (the dtype comes from the dataset
config, not the file); no metadata file is needed. `NumpyFSLDataset` cuts each file on its own
into consecutive `sequence_length`-token instances and ignores the remainder at the end of each
file; it adds no token ("EOS tokens between documents ... will already be in the array").

How a selection becomes files:
- Order: shards in name order, rows in file order (the selection's seeded row order, as in its
  `indices.npy`). Files are named `<shard stem>-<segment:05d>.npy`, so a sorted glob of
  `OUT/*.npy` and `OUT/data_paths.txt` both list them in that order.
- EOS: none added. Each chunk was cut from EOS-joined documents, so the EOS ending each document
  is already inside the chunks; one more after every chunk would mark a document end every
  seq_len tokens where there is none (and OLMo-core's document masking, `generate_doc_lengths`,
  splits instances at EOS).
- Segments: a file ends after every chunk shorter than seq_len (the last chunk of an input
  file). With `sequence_length = seq_len` the instances of `NumpyFSLDataset` are then exactly
  the selection's full-length chunks, one per instance, in order; each short chunk is the
  remainder of its file, which the dataset skips (`olmo.tokens_outside_instances` in export.json
  counts them). Without the cut, every instance after a short chunk would straddle two
  unrelated chunks. Read as flat arrays, the files hold every token of the selection, in order.
- dtype: uint16 when every id fits (vocabulary <= 65,536), else uint32: what OLMo-core infers
  from the tokenizer's vocab_size when the config names no dtype (the smallest unsigned type
  holding vocab_size - 1), except that it would pick uint8 for a vocabulary of <= 256 ids, which
  the export never writes: set `dtype` in the dataset config to export.json's `dtype`.
- A `sequence_length` that is k x seq_len makes instances of k consecutive chunks, joined with
  no separator (chunks are unrelated text after the selection's shuffle).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from colorfilter.export.outputs import UINT16_IDS, OutputFile
from colorfilter.export.source import ShardTokens
from colorfilter.io.location import Location

NAME = "olmo"
SUFFIX = ".npy"
EOS_RULE = ("none added: chunks keep the EOS tokens that end documents inside them; a file ends "
            "after each chunk shorter than seq_len, so NumpyFSLDataset(sequence_length=seq_len) "
            "instances are the full-length chunks and each short chunk is a skipped file remainder")


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= UINT16_IDS else np.uint32)


def shard_files(
    stem: str, shard: ShardTokens, tokens: np.ndarray, seq_len: int
) -> list[OutputFile]:
    """The shard's rows cut into files after each short chunk (see the module docstring)."""
    lengths = shard.lengths
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ends = [int(r) + 1 for r in np.flatnonzero(lengths < seq_len)]
    if not ends or ends[-1] != len(lengths):
        ends.append(len(lengths))
    files, start = [], 0
    for segment, end in enumerate(ends):
        rows = lengths[start:end]
        full = int(np.count_nonzero(rows == seq_len))
        piece = tokens[offsets[start]:offsets[end]]
        files.append(OutputFile(
            f"{stem}-{segment:05d}{SUFFIX}", [piece], sequences=end - start, tokens=int(piece.size),
            extra={"instances": full, "tokens_outside_instances": int(rows.sum()) - full * seq_len},
        ))
        start = end
    return files


def data_paths(out: Location, names: list[str]) -> list[str]:
    """Every token file, in order: OLMo-core's `paths`."""
    return [out.join(name).url for name in names if name.endswith(SUFFIX)]


def summary(files: list[dict[str, Any]], seq_len: int, dtype: np.dtype) -> dict[str, Any]:
    """How to point OLMo-core at the export, and what its fixed-length dataset will see."""
    instances = sum(f["extra"]["instances"] for f in files)
    return {
        "dataset": "olmo_core.data.NumpyFSLDataset (NumpyFSLDatasetConfig)",
        "sequence_length": seq_len,
        "dtype": str(dtype),
        "paths": "data_paths.txt (one path per line, in order), or the sorted glob OUT/*.npy",
        "instances": instances,
        "tokens_in_instances": instances * seq_len,
        "tokens_outside_instances": sum(f["extra"]["tokens_outside_instances"] for f in files),
    }
