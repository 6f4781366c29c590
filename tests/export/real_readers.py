"""Read exports back with the trainers' own libraries: `python -m tests.export.real_readers
JOBS.json`, where JOBS.json lists {"format", "out", "result"}; each result is an .npz.

Run in a subprocess so that importing megatron.core and olmo_core (their logging set-up, their
fallbacks for a missing Transformer Engine/Apex) cannot change the test session, and so that
both libraries are imported once for all exports. Installed for the tests by `make install`
(tests/export/requirements-readers.txt).
- megatron: `IndexedDataset(prefix)` for each prefix of data_paths.txt: every sequence, the
  sequence lengths and the document indices it reads.
- olmo: `olmo_core.data.utils.load_array_slice` over each whole token file (the flat tokens),
  and `NumpyFSLDataset(*paths, sequence_length=seq_len, ...)`: every instance, in order.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

READERS = {"megatron": "megatron-core", "olmo": "ai2-olmo-core"}  # their distributions


def read_megatron(out: Path, export: dict) -> dict[str, np.ndarray]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    sequences, sizes, documents = [], [], []
    for prefix in (out / "data_paths.txt").read_text().split():
        dataset = IndexedDataset(prefix)  # copies: its arrays are views of memory maps that
        sequences += [np.array(dataset[i]) for i in range(len(dataset))]  # close with it
        sizes.append(np.array(dataset.sequence_lengths))
        documents.append(np.array(dataset.document_indices))
    return {
        "tokens": np.concatenate(sequences),
        "dtype": np.array(sequences[0].dtype.name),
        "sizes": np.concatenate(sizes),
        "documents_per_prefix": np.array([len(d) - 1 for d in documents]),
        "documents_are_sequences": np.array(all(
            np.array_equal(d, np.arange(len(d))) for d in documents)),
    }


def read_olmo(out: Path, export: dict) -> dict[str, np.ndarray]:
    from olmo_core.data import NumpyFSLDataset
    from olmo_core.data.utils import load_array_slice

    paths = (out / "data_paths.txt").read_text().split()
    dtype = np.dtype(export["dtype"]).type
    item = np.dtype(dtype).itemsize
    flat = [load_array_slice(p, 0, os.path.getsize(p) // item, dtype) for p in paths]
    vocab = export["vocab"]
    dataset = NumpyFSLDataset(
        *paths, sequence_length=export["seq_len"], pad_token_id=vocab["pad_token_id"] or 0,
        eos_token_id=vocab["eos_token_id"] or 0, vocab_size=vocab["size"], dtype=dtype,
    )  # fmt: skip
    instances = [dataset[i]["input_ids"].numpy() for i in range(len(dataset))]
    return {
        "tokens": np.concatenate(flat),
        "dtype": np.array(flat[0].dtype.name),
        "instances": np.stack(instances) if instances else np.zeros((0, export["seq_len"])),
    }


def main(jobs_file: str) -> None:
    for job in json.loads(Path(jobs_file).read_text()):
        out = Path(job["out"])
        export = json.loads((out / "export.json").read_text())
        reader = read_megatron if job["format"] == "megatron" else read_olmo
        np.savez(job["result"], **reader(out, export))


if __name__ == "__main__":
    main(sys.argv[1])
