from __future__ import annotations

from dataclasses import replace

import pytest

from domainfm.tasks.benchmark.splits import check_leakage, label_subset, make_folds


def test_group_folds_are_disjoint_cover_everything_and_do_not_depend_on_a_seed(make_task):
    task = make_task(n=60, groups=6)
    folds = make_folds(task, num_folds=4)
    assert len(folds) == 4
    tested = [k for _, test in folds for k in test]
    assert sorted(tested) == sorted(item.key for item in task.items)  # every item once
    group = {item.key: item.group for item in task.items}
    for train, test in folds:
        assert not {group[k] for k in train} & {group[k] for k in test}
    assert make_folds(task, num_folds=4) == folds


def test_fewer_groups_than_folds_gives_leave_one_group_out_and_one_group_is_refused(make_task):
    assert len(make_folds(make_task(n=12, groups=3), num_folds=5)) == 3
    with pytest.raises(ValueError, match="one group"):
        make_folds(make_task(n=12, groups=1))


def test_a_predefined_fold_that_splits_a_group_is_refused(make_task):
    task = make_task(n=12, groups=3)
    leaky = replace(task, folds=(frozenset({"i000"}), frozenset({"i003", "i001"})))
    with pytest.raises(ValueError, match="group 'g0' is on both sides"):
        make_folds(leaky)
    with pytest.raises(ValueError, match="both sides"):
        check_leakage(task, ["i000", "i001"], ["i001"])


def test_predefined_folds_are_used_as_given(make_task):
    task = make_task(n=12, groups=3)
    fold_a = frozenset(i.key for i in task.items if i.group == "g0")
    fold_b = frozenset(i.key for i in task.items if i.group == "g1")
    folds = make_folds(replace(task, folds=(fold_a, fold_b)))
    assert [set(test) for _, test in folds] == [fold_a, fold_b]
    assert "i002" in folds[0][0] and "i002" in folds[1][0]  # in no fold: always training


def test_label_subset_is_stratified_seeded_and_a_subset_of_train(make_task):
    task = make_task(n=60, groups=6, classes=3)
    train = [item.key for item in task.items]
    few = label_subset(task, train, fraction=0.1, seed=0)
    assert len(few) == 6  # ceil(0.1 * 20) = 2 per class
    by_key = {item.key: item.target for item in task.items}
    assert sorted(by_key[k] for k in few) == [0, 0, 1, 1, 2, 2]
    assert label_subset(task, train, fraction=0.1, seed=0) == few
    assert label_subset(task, train, fraction=0.1, seed=1) != few
    assert len(label_subset(task, train, fraction=0.01, seed=0)) == 3  # one per class at least
    assert label_subset(task, train, fraction=1.0, seed=5) == tuple(train)
    with pytest.raises(ValueError):
        label_subset(task, train, fraction=0.0, seed=0)
