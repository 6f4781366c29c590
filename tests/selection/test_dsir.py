"""DSIR baseline: features and weights as the `data-selection` package computes them."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from colorfilter.selection import dsir
from colorfilter.selection.topk import topk_arrays

COMMON = "the a of and to in is it that with for on as this was by at from".split()
TOPICS = {
    "kitchen": "flour butter oven bake sugar dough whisk simmer garlic onion pan salt pepper "
    "knead roast recipe minutes golden crust sauce stir boil cream".split(),
    "computing": "kernel compiler thread memory cache packet socket server debug library "
    "install config binary module daemon process network buffer parse".split(),
    "sports": "match goal season coach league striker keeper referee penalty stadium fans "
    "score trophy injury transfer squad tactics derby final".split(),
}
PUNCTUATION = [".", ",", ";", "!", "?", " -", "'s", ":"]


def make_docs(topic: str, count: int, seed: int) -> list[str]:
    """Short documents with shared function words and punctuation; topic "mixed" switches topic
    sentence by sentence, so those documents sit near the selection boundary."""
    rng = random.Random(f"{topic}-{seed}")
    docs = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(2, 8)):
            words = TOPICS[rng.choice(list(TOPICS)) if topic == "mixed" else topic]
            body = [
                rng.choice(words if rng.random() < 0.55 else COMMON)
                for _ in range(rng.randint(4, 14))
            ]
            body[0] = body[0].capitalize()
            sentences.append(" ".join(body) + rng.choice(PUNCTUATION))
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="module")
def corpora() -> dict[str, list[str]]:
    labelled = [
        (topic, doc)
        for topic, count in (("kitchen", 40), ("mixed", 100), ("computing", 80), ("sports", 80))
        for doc in make_docs(topic, count, 1)
    ]
    random.Random(0).shuffle(labelled)
    return {
        "target": make_docs("kitchen", 80, 2),
        "pool": [doc for _, doc in labelled],
        "topics": [topic for topic, _ in labelled],
    }


def test_tokenizer_and_buckets_match_nltk_and_the_package():
    nltk_tokenize = pytest.importorskip("nltk.tokenize")
    text = "Hello, World!! It's 3.14 -- naïve café; 東京 e-mail\nnew_line ..."
    assert dsir.tokenize(text) == nltk_tokenize.WordPunctTokenizer().tokenize(text.lower())
    package = pytest.importorskip("data_selection.hashed_ngram_dsir")
    for ngram in ["the", "hello world", "東京", "it ' s"]:
        assert dsir.ngram_bucket(ngram) == package.hash_buckets(ngram)
    assert np.array_equal(dsir.count_ngrams([text]), package.get_ngram_counts(text))


def test_target_like_documents_weigh_more(corpora):
    model = dsir.fit(corpora["target"], corpora["pool"])
    weights = dsir.log_importance(model, corpora["pool"])
    topics = np.array(corpora["topics"])
    assert weights.dtype == np.float32 and len(weights) == len(corpora["pool"])
    mean = {topic: weights[topics == topic].mean() for topic in TOPICS}
    assert mean["kitchen"] > 0 > mean["computing"] and mean["kitchen"] > 0 > mean["sports"]
    top = np.argsort(-weights)[:40]
    assert np.mean(topics[top] == "kitchen") >= 0.9


def test_fit_streams_and_counts_add_across_shards(corpora):
    target, pool = corpora["target"], corpora["pool"]
    in_memory = dsir.fit(target, pool)
    streamed = dsir.fit((doc for doc in target), iter(pool))
    assert np.array_equal(in_memory.log_ratio, streamed.log_ratio)
    shard_counts = sum(dsir.count_ngrams(pool[i::3]) for i in range(3))
    merged = dsir.model_from_counts(dsir.count_ngrams(target), shard_counts)
    assert np.allclose(merged.log_ratio, in_memory.log_ratio)


def test_bad_fits_are_refused():
    with pytest.raises(ValueError, match="pseudocount"):
        dsir.fit(["a b"], ["c d"], pseudocount=0.0, prob_floor=0.0)
    with pytest.raises(ValueError, match="no n-grams in the raw"):
        dsir.fit(["a b"], [""], pseudocount=0.0, prob_floor=1e-8)
    with pytest.raises(ValueError, match="differ"):
        dsir.model_from_counts(np.ones(3), np.ones(4))


def package_weights(tmp_path, target: list[str], pool: list[str]) -> np.ndarray:
    """Weights from data-selection's HashedNgramDSIR on jsonl files (its API reads files)."""
    package = pytest.importorskip("data_selection")
    paths = {}
    for name, docs in (("target", target), ("pool", pool)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps({"text": doc}) + "\n" for doc in docs))
    selector = package.HashedNgramDSIR(
        raw_datasets=[str(paths["pool"])],
        target_datasets=[str(paths["target"])],
        cache_dir=str(tmp_path / "cache"),
        num_proc=1,
        min_example_length=0,
    )
    selector.fit_importance_estimator(num_tokens_to_fit="all")
    selector.compute_importance_weights()
    return np.load(selector.log_importance_weights_dir / "0.npy")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return len(set(a) & set(b)) / len(set(a) | set(b))


def test_topk_matches_the_data_selection_package(tmp_path, corpora):
    target, pool = corpora["target"], corpora["pool"]
    reference = package_weights(tmp_path, target, pool)
    seq_id = np.arange(len(pool), dtype=np.uint64)
    k = len(pool) // 5
    reference_top = topk_arrays(seq_id, reference, k)

    same_smoothing = dsir.fit(target, pool, pseudocount=0.0, prob_floor=1e-8)
    weights = dsir.log_importance(same_smoothing, pool)
    assert np.allclose(weights, reference, rtol=1e-6, atol=1e-3)
    assert np.array_equal(topk_arrays(seq_id, weights, k), reference_top)

    # Add-one smoothing reorders documents of the same kind near the boundary (here the mixed
    # ones), but picks the same share of target-topic documents.
    add_one_top = topk_arrays(seq_id, dsir.log_importance(dsir.fit(target, pool), pool), k)
    overlap = jaccard(add_one_top, reference_top)
    print(
        f"DSIR top-{k} of {len(pool)}: Jaccard with data-selection = 1.0 (same smoothing), "
        f"{overlap:.3f} (add-one smoothing)"
    )
    assert overlap >= 0.75
    topics = np.array(corpora["topics"])
    assert np.mean(topics[add_one_top.astype(int)] == "kitchen") == pytest.approx(
        np.mean(topics[reference_top.astype(int)] == "kitchen"), abs=0.05
    )
