"""The dataset card (README.md): YAML front matter that `load_dataset` reads, and a description.

The `configs`/`data_files` block makes `datasets.load_dataset(<folder or repo>)` load only the
parquet shards, ignoring indices.npy, the PNG and the manifest that sit beside them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DATA_GLOB = "data/train-*.parquet"
HISTOGRAM_NAME = "scores_histogram.png"
INDICES_NAME = "indices.npy"

PAPER = "https://arxiv.org/abs/2406.10670"
CITATION = """@article{brandfonbrener2024colorfilter,
  title   = {CoLoR-Filter: Conditional Loss Reduction Filtering for Targeted Language Model
             Pre-training},
  author  = {Brandfonbrener, David and Zhang, Hanlin and Kirsch, Andreas and
             Schwarz, Jonathan Richard and Kakade, Sham},
  journal = {arXiv preprint arXiv:2406.10670},
  year    = {2024}
}"""

COLUMNS = (
    ("seq_id", "uint64", "stable id of the chunk in the pool (input file index << 32 | chunk)"),
    ("input_ids", "list<int32>", "the chunk's tokens (no padding)"),
    ("text", "string", "`input_ids` decoded with the run's tokenizer (special tokens kept)"),
    ("score", "float32", "`prior_loss - cond_loss`; higher means more useful for the target"),
    ("prior_loss", "float32", "mean next-token cross-entropy under the prior model (nats)"),
    ("cond_loss", "float32", "mean next-token cross-entropy under the conditional model (nats)"),
    ("n_tokens", "int32", "number of tokens in the chunk"),
    ("source_file", "string", "input file the chunk was cut from"),
    ("doc_first, doc_last", "int64", "first and last document (of that file) the chunk covers"),
    ("doc_offset", "int32", "token offset of the chunk inside `doc_first`"),
    ("source", "string", "per-document source label, when the input had one"),
)

_SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)


@dataclass
class CardInfo:
    """What the card says about one selection."""

    method: str
    tau: float
    params: Mapping[str, Any]
    counts: Mapping[str, Any]
    config_hash: str
    seed: int
    num_shards: int
    threshold: float | None = None
    command: str | None = None
    repo_id: str | None = None
    pretty_name: str | None = None
    extra_metadata: Mapping[str, Any] = field(default_factory=dict)
    cascade: Mapping[str, Any] | None = None  # the distilled prefilter behind the scores


def size_category(n_rows: int) -> str:
    """The Hub's size_categories bucket for a row count."""
    for limit, label in _SIZE_CATEGORIES:
        if n_rows < limit:
            return label
    return "n>1B"


def front_matter(info: CardInfo) -> dict[str, Any]:
    """The card's YAML metadata."""
    return {
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": DATA_GLOB}]}
        ],
        "license": "other",
        "task_categories": ["text-generation"],
        "tags": ["colorfilter", "data-selection"],
        "pretty_name": info.pretty_name
        or f"CoLoR-Filter selection ({info.method}, tau={info.tau})",
        "size_categories": [size_category(int(info.counts["selected"]))],
        **info.extra_metadata,
    }


def render_card(info: CardInfo) -> str:
    """The full README.md text."""
    import yaml

    meta = yaml.safe_dump(front_matter(info), sort_keys=False, allow_unicode=True)
    sections = [
        f"---\n{meta}---\n",
        f"# {front_matter(info)['pretty_name']}\n",
        _about_section(info),
        _method_section(info),
        _counts_section(info.counts),
        _cascade_section(info.cascade),
        _histogram_section(info, bool(info.cascade)),
        _columns_section(),
        _loading_section(info),
        _provenance_section(info),
        f"## Citation\n\n```bibtex\n{CITATION}\n```\n",
    ]
    return "\n".join(section for section in sections if section)


def _about_section(info: CardInfo) -> str:
    return (
        "## About\n\n"
        "This dataset is a subset of a pre-training candidate pool chosen with CoLoR-Filter "
        f"(Conditional Loss Reduction Filtering, Brandfonbrener et al. 2024, [arXiv 2406.10670]"
        f"({PAPER})). Two small language models score every fixed-length chunk of the pool: a "
        "*prior* model trained on pool data, and a *conditional* model, the prior fine-tuned on a "
        "small sample of the target distribution. A chunk's score is `prior_loss - cond_loss`, "
        "how much more likely the target-tuned model finds it; keeping the highest-scoring "
        f"1/tau of the pool (here tau = {info.tau:g}) selects the data most informative about "
        "the target, for training a larger model.\n"
    )


def _method_section(info: CardInfo) -> str:
    rows = [("method", info.method), ("tau", f"{info.tau:g}"), ("seed (row order)", info.seed)]
    rows += [(key, json.dumps(value, default=str)) for key, value in sorted(info.params.items())]
    if info.threshold is not None:
        rows.append(("score threshold (lowest selected score)", f"{info.threshold:.6g}"))
    return "## Method and parameters\n\n" + _table(("parameter", "value"), rows)


def _counts_section(counts: Mapping[str, Any]) -> str:
    rows = [
        ("candidates", counts["candidates"]),
        ("selected", counts["selected"]),
        ("not selected", counts["not_selected"]),
    ]
    rows += [(f"skipped: {reason}", n) for reason, n in counts["skipped"].items()]
    rows.append(("selected tokens", counts["selected_tokens"]))
    note = "candidates = selected + not selected + skipped.\n"
    return "## Counts\n\n" + _table(("count", "value"), rows) + "\n" + note


def _cascade_section(cascade: Mapping[str, Any] | None) -> str:
    """How many chunks the LM pair scored under the cascade, and the recall it is trusted with."""
    if not cascade:
        return ""
    rows = [
        ("pool chunks", cascade["pool_chunks"]),
        ("scored by the LM pair (sample + candidates)", cascade["lm_scored_chunks"]),
        ("skipped by the cheap prefilter", cascade["prefiltered_chunks"]),
        ("candidates planned for tau >=", f"{cascade['planned_tau']:g}"),
        ("keep ratio", f"{cascade['keep_ratio']:g}"),
    ]
    estimate = cascade.get("recall_estimate")
    if estimate and estimate.get("estimate") is not None:
        low, high = estimate["ci95"]
        rows.append(("estimated recall of the pool's true top 1/tau",
                     f"{estimate['estimate']:.3f} (95% interval {low:.3f}-{high:.3f}, from "
                     f"{estimate['held_out_top_chunks']} held-out top chunks)"))  # fmt: skip
    note = (
        "The pool was prefiltered by a cheap scorer distilled from the two models (the cascade): "
        "only a random sample and the top chunks by cheap score were scored by the LM pair; the "
        "rest are counted as skipped (`prefiltered`). The recall estimate is the share of the "
        "chunks an exact pass would have selected that the cascade scored, estimated on a "
        "held-out sample the cheap scorer never trained on.\n"
    )
    return "## Cascade (distilled prefilter)\n\n" + _table(("", "value"), rows) + "\n" + note


def _histogram_section(info: CardInfo, cascade: bool = False) -> str:
    line = "; the dashed line is the selection threshold" if info.threshold is not None else ""
    pool = "the pool's LM-scored chunks (the cascade's sample and candidates)" if cascade else (
        "the whole pool")
    return (
        "## Score distribution\n\n"
        f"![Pool and selected scores]({HISTOGRAM_NAME})\n\n"
        f"Scores of {pool} (blue) and of the selected chunks (red){line}.\n"
    )


def _columns_section() -> str:
    rows = [(f"`{name}`", kind, text) for name, kind, text in COLUMNS]
    return "## Columns\n\n" + _table(("column", "type", "meaning"), rows)


def _loading_section(info: CardInfo) -> str:
    where = info.repo_id or "path/to/this/folder"
    return (
        "## Loading\n\n"
        f'```python\nfrom datasets import load_dataset\n\nds = load_dataset("{where}", '
        'split="train")\n```\n\n'
        f"Rows are in a fixed pseudo-random order (sorted by a hash of seed and `seq_id`), spread "
        f"over {info.num_shards} zstd parquet shard(s). `{INDICES_NAME}` holds the same "
        "`seq_id`s as a uint64 numpy array in exactly that row order (row 0 of shard 0 first), "
        "for trainers that read the memory-mapped token shards of the run instead of parquet.\n"
    )


def _provenance_section(info: CardInfo) -> str:
    command = f"`{info.command}`" if info.command else "the `colorfilter` pipeline"
    return (
        "## Provenance\n\n"
        f"Produced by {command}; config hash `{info.config_hash}`. `manifest.json` records the "
        "resolved config, the tokenizer and model checkpoint hashes, the input files with sizes "
        "and checksums, package versions, and the sha256 of every file in this folder.\n"
    )


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows
    ]
    return "\n".join(lines) + "\n"
