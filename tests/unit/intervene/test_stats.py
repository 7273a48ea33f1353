import itertools

import numpy as np
import pytest

from atlas.intervene.stats import describe_tests, report_tests, sign_flip_p
from atlas.intervene.summary import SetSummary


def brute_force_p(values):
    x = np.asarray(values)
    observed = abs(x.mean())
    flips = itertools.product([1, -1], repeat=len(x))
    return float(np.mean([abs((x * np.array(f)).mean()) >= observed - 1e-12 for f in flips]))


@pytest.mark.parametrize("values", [[0.16, 0.27, 0.46, 0.05, -0.2, -0.46, 0.0, -0.15, 0.23],
                                    [0.3, 0.2, 0.5, 0.1, 0.4, 0.25, 0.35, 0.15, 0.45],
                                    [-0.1, 0.2, -0.3]])
def test_sign_flip_p_is_the_exact_enumeration(values):
    assert sign_flip_p(values) == pytest.approx(brute_force_p(values))


def test_all_positive_sets_give_the_smallest_possible_p():
    assert sign_flip_p([0.1] * 9) == pytest.approx(2 / 2**9)


def test_degenerate_inputs():
    assert sign_flip_p([0.5]) is None
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_p([None, 0.2, float("nan")]) is None


def _summary(index, target, control, abs_change, control_abs) -> SetSummary:
    return SetSummary("s", 1, target, None, index, control, None, abs_change, control_abs)


def test_report_tests_pairs_each_set_with_its_control():
    summary = [_summary(0.4, -0.5, 0.0, 0.3, 0.1), _summary(0.2, -0.3, -0.1, 0.2, 0.25),
               _summary(None, None, None, None, None), _summary(-0.1, 0.1, None, 0.4, None)]
    tests = report_tests(summary)
    assert tests.n_sets == 3 and tests.n_controlled == 2
    assert tests.mean_specificity_index == pytest.approx(0.5 / 3)
    assert tests.mean_target_minus_control == pytest.approx(-0.35)
    assert tests.specificity_p == pytest.approx(brute_force_p([0.4, 0.2, -0.1]))
    assert tests.mean_abs_change == pytest.approx(0.25)
    assert tests.control_mean_abs_change == pytest.approx(0.175)
    assert tests.abs_change_minus_control_p == pytest.approx(brute_force_p([0.2, -0.05]))
    assert "over 3 sets" in describe_tests(tests) and "random controls 0.175" in describe_tests(tests)


def test_paired_interval_brackets_the_estimate():
    from atlas.intervene.stats import paired_rel_change_interval

    rng = np.random.default_rng(1)
    base = rng.integers(0, 2, 200).astype(float)
    strong = base.copy()
    strong[base == 1][:40] = 0
    strong[np.flatnonzero(base == 1)[:40]] = 0
    estimate = (strong.mean() - base.mean()) / base.mean()
    lo, hi = paired_rel_change_interval(base, strong, seed=0)
    assert lo <= estimate <= hi and hi < 0  # a clear drop excludes 0
    noise = base.copy()
    flip = rng.choice(200, 10, replace=False)
    noise[flip] = 1 - noise[flip]
    lo, hi = paired_rel_change_interval(base, noise, seed=0)
    assert lo < 0 < hi
    assert paired_rel_change_interval(base, base) == (0.0, 0.0)
    assert paired_rel_change_interval(np.zeros(5), np.ones(5)) is None  # undefined relative change
    assert paired_rel_change_interval(base, noise, seed=3) == paired_rel_change_interval(base, noise, seed=3)


def test_paired_difference_and_above_chance_match_direct_computation():
    from scipy.stats import binomtest

    from atlas.intervene.stats import above_chance, paired_difference, sign_flip_p

    treated = np.array([0.9, 0.2, 0.4, 0.8, 0.1])
    controls = [np.array([0.5, 0.5, 0.5, 0.5, 0.5]), np.array([0.7, 0.1, 0.3, 0.6, 0.3])]
    diff = treated - (controls[0] + controls[1]) / 2
    got = paired_difference(treated, controls)
    assert got.mean_diff == pytest.approx(diff.mean()) and got.n == 5
    assert got.p == pytest.approx(sign_flip_p(list(diff)))
    golds = ["a"] * 14 + ["b"] * 6  # majority share 0.7 beats 1 / 2 labels
    correct = np.array([1] * 17 + [0] * 3)
    res = above_chance(correct, golds)
    assert res.chance == pytest.approx(0.7)
    assert res.p == pytest.approx(binomtest(17, 20, 0.7, alternative="greater").pvalue)
    assert res.above == (res.p < 0.05)


def test_set_level_test_is_the_pooled_t_test_of_one_draw_and_is_calibrated():
    from scipy.stats import ttest_ind

    from atlas.intervene.stats import set_level_test

    controls = [0.47, 0.36, 0.58, 0.41]
    got = set_level_test(0.20, controls)
    # one new draw against n controls: the pooled two-sample t test with a sample of one
    assert got.t_p == pytest.approx(ttest_ind([0.20], controls).pvalue)
    assert got.diff == pytest.approx(0.20 - np.mean(controls))
    assert (got.rank, got.n_controls, got.rank_p) == (1, 4, pytest.approx(2 / 5))
    assert set_level_test(0.45, controls).rank == 3
    assert set_level_test(0.5, [0.4]) is None
    # a set that is itself random is rejected at about the nominal rate, also with 3 controls
    rng = np.random.default_rng(0)
    for n in (3, 20):
        draws = rng.normal(0.5, 0.1, size=(4000, n + 1))
        rate = np.mean([set_level_test(d[0], list(d[1:])).t_p < 0.05 for d in draws])
        assert 0.04 < rate < 0.06, (n, rate)


def test_set_summary_serialises_its_tests_where_computed():
    from atlas.intervene.summary import PairedTest, SetLevelTest, included_sets

    entry = _summary(0.1, -0.2, 0.0, 0.2, 0.1)
    entry.own_task_above_chance = False
    assert "paired" not in entry.to_dict() and "set_level" not in entry.to_dict()
    entry.paired = PairedTest(-0.1, 0.02, 50, "gold_prob")
    data = entry.to_dict()  # the set-level test is null below two controls, beside the paired one
    assert data["paired"] == {"statistic": "gold_prob", "mean_diff": -0.1, "p": 0.02, "n": 50}
    assert data["set_level"] is None and list(data)[-1] == "own_task_above_chance"
    entry.set_level = SetLevelTest(0.2, 0.4, 0.05, 20, -0.2, 0.001, 1, 0.095)
    assert entry.set_level.significant and entry.to_dict()["set_level"]["n_controls"] == 20
    assert included_sets([entry]) == [] and included_sets([_summary(0, 0, 0, 0, 0)])
