"""Tokenize documents and cut the token stream into fixed-length chunks, as the paper does.

Documents of one input file are joined with EOS after each and cut every `seq_len` tokens,
ignoring document boundaries. Each chunk records where it came from (first and last document
index, token offset inside the first), so its text and its source documents can be recovered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from colorfilter.io.token_shards import TOKEN_SCHEMA, make_seq_ids

MIN_TAIL_TOKENS = 2  # a shorter final chunk predicts nothing (one token: no next-token loss)


@dataclass
class _Piece:
    tokens: np.ndarray  # int32
    doc_index: int
    doc_offset: int  # token offset of tokens[0] inside its document
    source: str | None


@dataclass
class Chunker:
    """Accumulates tokenized documents of one file and emits fixed-length chunks."""

    seq_len: int
    file_index: int
    source_file: str
    chunks_emitted: int = 0
    pending_tokens: int = 0
    _pieces: list[_Piece] = field(default_factory=list)

    def add(self, doc_index: int, tokens: np.ndarray, source: str | None = None) -> None:
        """Queue one document's tokens (EOS already appended)."""
        if len(tokens):
            self._pieces.append(_Piece(tokens.astype(np.int32, copy=False), doc_index, 0, source))
            self.pending_tokens += len(tokens)

    def full_chunks(self) -> int:
        return self.pending_tokens // self.seq_len

    def take(
        self, max_chunks: int, final: bool = False, min_tail_tokens: int = MIN_TAIL_TOKENS
    ) -> pa.Table:
        """Emit up to `max_chunks` full chunks; with `final`, also the short tail chunk."""
        count = min(self.full_chunks(), max_chunks)
        tail = 0
        if final and count == self.full_chunks():
            tail = self.pending_tokens - count * self.seq_len
            tail = tail if tail >= min_tail_tokens else 0
        used = count * self.seq_len + tail
        if used == 0:
            return TOKEN_SCHEMA.empty_table()
        tokens = np.concatenate([p.tokens for p in self._pieces])
        starts = np.cumsum([0] + [len(p.tokens) for p in self._pieces[:-1]])
        table = self._build_table(tokens[:used], starts, count + (1 if tail else 0))
        self._keep_remainder(tokens, starts, used)
        return table

    def _build_table(self, tokens: np.ndarray, piece_starts: np.ndarray, n_chunks: int) -> pa.Table:
        chunk_starts = np.arange(n_chunks, dtype=np.int64) * self.seq_len
        chunk_ends = np.minimum(chunk_starts + self.seq_len, len(tokens))
        first = np.searchsorted(piece_starts, chunk_starts, side="right") - 1
        last = np.searchsorted(piece_starts, chunk_ends - 1, side="right") - 1
        doc_index = np.array([p.doc_index for p in self._pieces], dtype=np.int64)
        doc_offset = np.array([p.doc_offset for p in self._pieces], dtype=np.int64)
        sources = [self._pieces[i].source for i in first]
        offsets = np.append(chunk_starts, len(tokens)).astype(np.int32)
        columns = {
            "seq_id": make_seq_ids(self.file_index, self.chunks_emitted, n_chunks),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens)),
            "n_tokens": (chunk_ends - chunk_starts).astype(np.int32),
            "source_file": [self.source_file] * n_chunks,
            "doc_first": doc_index[first],
            "doc_last": doc_index[last],
            "doc_offset": (doc_offset[first] + chunk_starts - piece_starts[first]).astype(np.int32),
            "source": sources,
        }
        self.chunks_emitted += n_chunks
        return pa.table(columns, schema=TOKEN_SCHEMA)

    def _keep_remainder(self, tokens: np.ndarray, piece_starts: np.ndarray, used: int) -> None:
        kept: list[_Piece] = []
        for piece, start in zip(self._pieces, piece_starts):
            end = start + len(piece.tokens)
            if end <= used:
                continue
            cut = max(0, used - start)
            kept.append(
                _Piece(
                    tokens[start + cut : end], piece.doc_index, piece.doc_offset + cut, piece.source
                )
            )
        self._pieces = kept
        self.pending_tokens = int(sum(len(p.tokens) for p in kept))


def document_chunks(
    lengths: np.ndarray, seq_len: int, min_tail_tokens: int = MIN_TAIL_TOKENS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each document's chunks lie when every document is chunked on its own: what a
    `Chunker` emits for a file holding only that document (its tokens, EOS included, cut every
    `seq_len`; a final piece shorter than `min_tail_tokens` dropped).

    `lengths` are the documents' token counts. Returns (document index, start, end) of every
    chunk, document by document, offsets inside the document.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    tails = lengths % seq_len
    per_doc = lengths // seq_len + (tails >= min_tail_tokens)
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), per_doc)
    first = np.cumsum(per_doc) - per_doc  # each document's first chunk
    start = (np.arange(len(doc), dtype=np.int64) - np.repeat(first, per_doc)) * seq_len
    end = np.minimum(start + seq_len, lengths[doc])
    return doc, start, end


def split_long_text(text: str, max_chars: int) -> list[str]:
    """Cut a huge document into pieces at whitespace so tokenizing it needs bounded memory.

    The pieces concatenate back to `text` exactly; byte-level BPE of the pieces equals that of
    the whole except possibly at the cut points.
    """
    if len(text) <= max_chars:
        return [text]
    pieces, start = [], 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            space = text.rfind(" ", start + max_chars // 2, end)
            end = space if space > start else end
        pieces.append(text[start:end])
        start = end
    return pieces


class DocumentTokenizer:
    """Wraps a HF fast tokenizer: batch encoding, EOS after each document, literal specials kept.

    Special-token strings inside a document (e.g. a web page quoting "<|endoftext|>") are encoded
    as plain text, so an EOS id in the stream always means a real document boundary.
    """

    def __init__(self, tokenizer_dir: str, max_segment_chars: int = 1_000_000):
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        if hf_tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer_dir} has no EOS token")
        self.eos_id = int(hf_tokenizer.eos_token_id)
        self.vocab_size = len(hf_tokenizer)
        self._backend = hf_tokenizer.backend_tokenizer
        self._backend.encode_special_tokens = True
        self.max_segment_chars = max_segment_chars

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids (int32) of each text, with EOS appended.

        Segments are encoded a few at a time and kept only as int32 arrays, so a huge document
        costs about 4 bytes per token, not the tokenizer's per-token objects for all of it.
        """
        per_doc: list[list[np.ndarray]] = [[] for _ in texts]
        group: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            for piece in split_long_text(text, self.max_segment_chars):
                group.append(piece)
                owners.append(i)
                if sum(map(len, group)) >= 2 * self.max_segment_chars:
                    self._encode_group(group, owners, per_doc)
                    group, owners = [], []
        self._encode_group(group, owners, per_doc)
        eos = np.array([self.eos_id], dtype=np.int32)
        return [np.concatenate(parts + [eos]) for parts in per_doc]

    def _encode_group(self, group: list[str], owners: list[int], per_doc: list[list]) -> None:
        if group:
            encodings = self._backend.encode_batch(group, add_special_tokens=False)
            for owner, encoding in zip(owners, encodings):
                per_doc[owner].append(np.asarray(encoding.ids, dtype=np.int32))
