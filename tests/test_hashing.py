import numpy as np
import pytest

from colorfilter.dataset.order import shuffle_keys
from colorfilter.hashing import seeded_keys, splitmix64
from colorfilter.models.data import chunk_keys
from colorfilter.selection.methods import random_key

IDS = np.arange(10_000, dtype=np.uint64) | (np.uint64(3) << np.uint64(32))


def test_splitmix64_matches_the_reference_generator():
    # first output of the splitmix64 generator seeded with 0
    assert int(splitmix64(np.array([0], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF


def test_keys_are_a_bijection_of_seq_id_and_deterministic():
    keys = seeded_keys(IDS, 7, "a")
    assert len(np.unique(keys)) == len(IDS)
    np.testing.assert_array_equal(keys, seeded_keys(IDS.copy(), 7, "a"))


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_every_use_has_its_own_stream(seed):
    """Random selection, training slice, epoch order and release order never share keys."""
    streams = {
        "random selection": random_key(IDS, seed),
        "training slice": chunk_keys(IDS, seed, 0),
        "epoch 0 order": seeded_keys(IDS, seed, "models.epoch-order", 0),
        "epoch 1 order": seeded_keys(IDS, seed, "models.epoch-order", 1),
        "release order": shuffle_keys(IDS, seed),
        "other seed": random_key(IDS, seed + 1),
    }
    k = len(IDS) // 16
    smallest = {name: set(np.argsort(keys)[:k].tolist()) for name, keys in streams.items()}
    names = list(smallest)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            overlap = len(smallest[first] & smallest[second]) / k
            # independent uniform k-subsets of n overlap by k/n = 1/16 on average
            assert overlap < 0.12, (first, second, overlap)


def test_seed_must_be_an_integer():
    with pytest.raises(TypeError):
        seeded_keys(IDS, 1.5, "a")
    with pytest.raises(TypeError):
        seeded_keys(IDS, True, "a")
