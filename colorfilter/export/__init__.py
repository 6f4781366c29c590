"""`colorfilter export SELECTION OUT --format olmo|megatron`: a selection as trainers read it.

- olmo.py: OLMo-core token files (flat headerless `.npy` arrays; NumpyFSLDataset instances are
  the selection's full-length chunks).
- megatron.py: Megatron-LM indexed datasets (`.bin` + `.idx`; each chunk one sequence and one
  document).
- source.py: the selection folder, checked against its manifest, read shard by shard.
- vocab.py: the vocabulary (and so the token dtype) from the run's tokenizer.
- outdir.py, driver.py: OUT (refusals, resume) and the per-shard, resumable export with
  `export.json` written last.

Both formats keep the selection's row order and add no token: the chunks already hold the EOS
tokens that end documents. Read back in order, every export is exactly the selection's tokens.
"""
