"""Patient-disjoint splits and folds."""

import numpy as np
import pytest

from chestattn_jax.data.splits import kfold_split, make_splits, official_split, random_split


def patients(n_patients=200, seed=0):
    rng = np.random.default_rng(seed)
    return np.repeat([f"p{i}" for i in range(n_patients)], rng.integers(1, 6, n_patients))


def assert_partition(pids, splits):
    idx = np.concatenate(list(splits.values()))
    assert sorted(idx.tolist()) == list(range(len(pids)))  # every example exactly once
    sets = {k: set(pids[v]) for k, v in splits.items()}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not sets[a] & sets[b], f"a patient is in {a} and {b}"


def test_random_split_is_70_10_20_by_patient_and_seeded():
    pids = patients()
    s = random_split(pids, seed=3)
    assert_partition(pids, s)
    n = {k: len(set(pids[v])) for k, v in s.items()}
    assert n == {"train": 140, "validation": 20, "test": 40}
    again = random_split(pids, seed=3)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = random_split(pids, seed=4)
    assert not np.array_equal(s["test"], other["test"])


def test_kfold_test_sets_cover_every_patient_once():
    pids = patients()
    tests = []
    for fold in range(3):
        s = kfold_split(pids, num_folds=3, fold=fold, seed=0)
        assert_partition(pids, s)
        tests.append(set(pids[s["test"]]))
    assert set.union(*tests) == set(pids)
    assert sum(len(t) for t in tests) == len(set(pids))


def test_official_split_keeps_the_test_list():
    pids = patients()
    is_test = np.isin(pids, [f"p{i}" for i in range(150, 200)])
    s = official_split(pids, is_test, seed=0)
    assert_partition(pids, s)
    np.testing.assert_array_equal(s["test"], np.flatnonzero(is_test))
    leaky = is_test.copy()
    leaky[np.flatnonzero(pids == "p0")[0]] = True
    if (pids == "p0").sum() > 1:
        with pytest.raises(ValueError, match="shares 1 patients"):
            official_split(pids, leaky)


def test_bad_split_settings():
    pids = patients(20)
    with pytest.raises(ValueError, match="Unknown split scheme 'holdout'"):
        make_splits("holdout", pids)
    with pytest.raises(ValueError, match="fold=3 is out of range"):
        make_splits("kfold", pids, fold=3)
    with pytest.raises(ValueError, match="leaves validation"):
        make_splits("random", pids[:6], fractions=(0.9, 0.0, 0.1))
    with pytest.raises(ValueError, match="needs the data set's own test list"):
        make_splits("official", pids)
    with pytest.raises(ValueError, match="summing to 1"):
        make_splits("random", pids, fractions=(0.5, 0.1, 0.1))
