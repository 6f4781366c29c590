"""Readers written against the formats' published layouts, with numpy alone.

They check every export in every test run, whether or not the trainers' own libraries are
installed (tests/export/test_real_readers.py reads the same files with those libraries):
- OLMo-core token files: raw, headerless arrays of the export's dtype (no numpy header);
  `NumpyFSLDataset` cuts each file on its own into `sequence_length` windows and drops the
  remainder of each file (olmo_core/data/numpy_dataset.py, ai2-olmo-core 3.0.0).
- Megatron `.idx`: b"MMIDIDX\\x00\\x00", uint64 version, uint8 dtype code, uint64 sequence
  count, uint64 document count, int32 sizes, int64 pointers, int64 document indices
  (megatron/core/datasets/indexed_dataset.py, megatron-core 0.16.1); `.bin`: the tokens.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                   6: np.float64, 7: np.float32, 8: np.uint16}


def data_paths(out: Path) -> list[str]:
    return (out / "data_paths.txt").read_text().split()


def olmo_arrays(paths: list[str], dtype: np.dtype) -> list[np.ndarray]:
    """Each token file as the flat array OLMo-core memory-maps."""
    return [np.fromfile(p, dtype=dtype) for p in paths]


def olmo_fsl_instances(paths: list[str], dtype: np.dtype, seq_len: int) -> list[np.ndarray]:
    """NumpyFSLDataset's instances: each file's consecutive windows, its remainder dropped."""
    out = []
    for array in olmo_arrays(paths, dtype):
        out += [array[i * seq_len:(i + 1) * seq_len] for i in range(len(array) // seq_len)]
    return out


@dataclass
class MegatronIndex:
    version: int
    dtype: type
    sizes: np.ndarray
    pointers: np.ndarray
    document_indices: np.ndarray
    sequences: list[np.ndarray]


def read_megatron(prefix: str) -> MegatronIndex:
    """One indexed dataset: its index and every sequence read from `.bin` by its pointer."""
    data = Path(prefix + ".idx").read_bytes()
    assert data[:9] == b"MMIDIDX\x00\x00", prefix
    version, code, count, docs = struct.unpack("<QBQQ", data[9:34])
    sizes = np.frombuffer(data, np.int32, count, 34)
    pointers = np.frombuffer(data, np.int64, count, 34 + sizes.nbytes)
    documents = np.frombuffer(data, np.int64, docs, 34 + sizes.nbytes + pointers.nbytes)
    assert len(data) == 34 + sizes.nbytes + pointers.nbytes + documents.nbytes, "trailing bytes"
    dtype = MEGATRON_DTYPES[code]
    blob = Path(prefix + ".bin").read_bytes()
    sequences = [np.frombuffer(blob, dtype, int(n), int(p)) for n, p in zip(sizes, pointers)]
    return MegatronIndex(version, dtype, sizes, pointers, documents, sequences)
