"""Significance of an intervention report: are the effects consistent across the tasks' sets?

Each task's set is one observation. A sign-flip permutation test (exact for up to 13 sets)
asks whether the mean over sets differs from 0 more than random signs would make it."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import DegenerateDataWarning, binomtest, bootstrap, permutation_test
from scipy.stats import t as student_t

from atlas.intervene.summary import (
    ALPHA,
    ChanceTest,
    PairedTest,
    ReportTests,
    SetLevelTest,
    SetSummary,
    significant,
)


def sign_flip_p(values: list[float]) -> float | None:
    """Two-sided p-value of mean(values) ≠ 0 under random sign flips; None below 2 values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return None
    if not np.any(x):
        return 1.0
    result = permutation_test((x,), np.mean, permutation_type="samples", n_resamples=9999,
                              alternative="two-sided", rng=np.random.default_rng(0))
    return float(result.pvalue)


def report_tests(summary: list[SetSummary]) -> ReportTests:
    """Across sets, each with its sign-flip p-value: the mean specificity index; the own-task
    change of a set minus its control's; the mean |change| over all tasks of a set against its
    control's (does the set matter more than random neurons, on any task?); and the counts of
    the sets' own tests (paired, set-level, versus the other tasks' sets) where computed."""
    index = [s.specificity_index for s in summary if s.specificity_index is not None]
    vs_control = [s.target_change - s.control_target_change for s in summary
                  if s.target_change is not None and s.control_target_change is not None]
    abs_pairs = [(s.mean_abs_change, s.control_mean_abs_change) for s in summary
                 if s.mean_abs_change is not None and s.control_mean_abs_change is not None]
    paired = [s.paired for s in summary if s.paired is not None]
    set_level = [s.set_level for s in summary if s.set_level is not None]
    versus = [s.vs_other_sets for s in summary if s.vs_other_sets is not None]
    return ReportTests(
        n_sets=len(index),
        mean_specificity_index=float(np.mean(index)) if index else None,
        specificity_p=sign_flip_p(index),
        n_controlled=len(vs_control),
        mean_target_minus_control=float(np.mean(vs_control)) if vs_control else None,
        target_minus_control_p=sign_flip_p(vs_control),
        mean_abs_change=float(np.mean([a for a, _ in abs_pairs])) if abs_pairs else None,
        control_mean_abs_change=float(np.mean([c for _, c in abs_pairs])) if abs_pairs else None,
        abs_change_minus_control_p=sign_flip_p([a - c for a, c in abs_pairs]),
        n_paired=len(paired),
        paired_statistic=paired[0].statistic if paired else None,
        mean_paired_diff=float(np.mean([p.mean_diff for p in paired])) if paired else None,
        n_paired_significant=sum(significant(p) for p in paired),
        n_set_level=len(set_level),
        n_set_level_significant=sum(v.significant for v in set_level),
        n_vs_other_sets=len(versus),
        mean_vs_other_sets=float(np.mean([v.mean_diff for v in versus])) if versus else None,
        vs_other_sets_p=sign_flip_p([v.mean_diff for v in versus]),
        n_vs_other_sets_significant=sum(significant(v) for v in versus),
    )


def describe_tests(tests: ReportTests) -> str:
    """One sentence for reports."""

    def fmt(mean: float | None, p: float | None, n: int) -> str:
        if mean is None:
            return "n/a"
        return f"{mean:+.3f} over {n} sets" + ("" if p is None else f" (sign-flip p = {p:.3g})")

    index = fmt(tests.mean_specificity_index, tests.specificity_p, tests.n_sets)
    control = fmt(tests.mean_target_minus_control, tests.target_minus_control_p,
                  tests.n_controlled)
    text = f"Mean specificity index {index}; own-task change minus its random control's {control}."
    if tests.mean_abs_change is not None:
        p = tests.abs_change_minus_control_p
        text += (f" Mean |change| over all tasks {tests.mean_abs_change:.3f}, random controls "
                 f"{tests.control_mean_abs_change:.3f}")
        text += ("" if p is None else f" (sign-flip p = {p:.3g})") + "."
    if tests.n_set_level:
        text += (f" Set level: {tests.n_set_level_significant} of {tests.n_set_level} sets "
                 "outside their random controls' spread (prediction t p < 0.05).")
    if tests.mean_vs_other_sets is not None:
        text += (" Own set minus the other tasks' sets on the own task: "
                 + fmt(tests.mean_vs_other_sets, tests.vs_other_sets_p, tests.n_vs_other_sets)
                 + ".")
    return text


def paired_rel_change_interval(base: np.ndarray, treated: np.ndarray, seed: int = 0,
                               level: float = 0.95) -> tuple[float, float] | None:
    """Bootstrap interval (paired over examples, percentile, seeded) of the relative change
    ``(mean(treated) − mean(base)) / mean(base)``; None when it is undefined (mean(base) = 0,
    fewer than 2 examples) or constant."""
    base, treated = np.asarray(base, float), np.asarray(treated, float)
    if len(base) < 2 or base.mean() == 0:
        return None
    diff = treated - base
    if not diff.any():  # no example changed: every resample gives 0
        return 0.0, 0.0
    if np.all(diff == diff[0]) and np.all(base == base[0]):
        value = float(diff[0] / base[0])
        return value, value

    def rel(b, t, axis=-1):
        mean_b = b.mean(axis)
        return (t.mean(axis) - mean_b) / np.where(mean_b == 0, np.nan, mean_b)

    with warnings.catch_warnings():  # a degenerate resampling gives NaN bounds, handled below
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = bootstrap((base, treated), rel, paired=True, vectorized=True, n_resamples=1999,
                           method="percentile", confidence_level=level,
                           rng=np.random.default_rng(seed))
    lo, hi = result.confidence_interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return float(lo), float(hi)


def paired_difference(treated: np.ndarray, controls: list[np.ndarray],
                      statistic: str | None = None) -> PairedTest:
    """Per example, ``treated`` minus the mean of the ``controls`` (same examples): the mean
    difference and its two-sided sign-flip p-value."""
    diff = np.asarray(treated, float) - np.mean([np.asarray(c, float) for c in controls], axis=0)
    return PairedTest(float(diff.mean()), sign_flip_p(list(diff)), int(len(diff)), statistic)


def set_level_test(own_mean: float, control_means: list[float]) -> SetLevelTest | None:
    """Does the set do something random sets of its size do not? Each random control's mean
    over the task's examples is one draw of a random set's effect, so the per-example paired
    test (which treats the controls' mean as fixed) is not a test of the set. Here the set is
    compared with the spread of the controls: a two-sided prediction-interval t test (the set as
    one more draw from a normal fitted to the n controls, n − 1 degrees of freedom) and its rank
    among them (1 = lowest) with the two-sided Monte Carlo p-value, which needs n ≥ 39 to reach
    0.05. None below 2 controls."""
    controls = np.asarray([c for c in control_means if c is not None and not math.isnan(c)], float)
    n = len(controls)
    if n < 2:
        return None
    mean, sd = float(controls.mean()), float(controls.std(ddof=1))
    below, above = int(np.sum(controls <= own_mean)), int(np.sum(controls >= own_mean))
    rank_p = min(1.0, 2 * (1 + min(below, above)) / (n + 1))
    if sd == 0:
        t_p = 1.0 if own_mean == mean else 0.0
    else:
        t_value = (own_mean - mean) / (sd * math.sqrt(1 + 1 / n))
        t_p = float(2 * student_t.sf(abs(t_value), n - 1))
    return SetLevelTest(float(own_mean), mean, sd, n, float(own_mean) - mean, t_p,
                        1 + int(np.sum(controls < own_mean)), rank_p)


def above_chance(correct: np.ndarray, golds: list[str], alpha: float = ALPHA) -> ChanceTest:
    """One-sided binomial test of accuracy against chance: the larger of 1 / labels seen and
    the share of the most common gold label among the examples."""
    counts = np.unique(np.asarray(golds), return_counts=True)[1]
    chance = float(max(1 / len(counts), counts.max() / len(golds)))
    k, n = int(np.sum(correct)), len(correct)
    p = float(binomtest(k, n, chance, alternative="greater").pvalue)
    return ChanceTest(k / n, n, chance, p, p < alpha)
