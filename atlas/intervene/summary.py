"""The report's results as dataclasses: one home for what a report says about its sets.

A report has, per evaluated task, the unmodified model's :class:`ChanceTest`; per intervened
set, a :class:`SetSummary` holding its :class:`PairedTest` against its random controls, its
:class:`SetLevelTest` against their spread and its :class:`VersusOtherSets` test; and across
the sets it includes (:func:`included_sets`), one :class:`ReportTests`. Every test's level is
:data:`ALPHA`. ``to_dict()`` gives each as the report's JSON has always written it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

ALPHA = 0.05  # every test's level: above chance, a set's paired test, the counts of significant sets


@dataclass(frozen=True)
class PairedTest:
    """Per example, a value minus the mean of others' values on the same examples: the mean
    difference, its two-sided sign-flip p-value and the number of examples. ``statistic`` names
    the per-example value (``gold_prob`` or ``correct``) where the report states it."""

    mean_diff: float
    p: float | None
    n: int
    statistic: str | None = None

    def to_dict(self) -> dict:
        head = {} if self.statistic is None else {"statistic": self.statistic}
        return {**head, "mean_diff": self.mean_diff, "p": self.p, "n": self.n}


@dataclass(frozen=True)
class SetLevelTest:
    """A set's mean on its own task against the spread of its random controls' means: the
    prediction-interval t test and the set's rank among the controls (1 = lowest)."""

    own_mean: float
    controls_mean: float
    controls_sd: float
    n_controls: int
    diff: float
    t_p: float
    rank: int
    rank_p: float

    @property
    def significant(self) -> bool:
        return self.t_p < ALPHA

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VersusOtherSets:
    """Per example of a set's own task, the set's value minus the mean under the other tasks'
    sets (same method and factor), with the own set's rank among all of them by mean value."""

    statistic: str
    own_mean: float
    others_mean: float
    rank: int
    n_sets: int
    mean_diff: float
    p: float | None
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChanceTest:
    """The unmodified model's accuracy on a task against chance (one-sided binomial test)."""

    accuracy: float
    n: int
    chance: float
    p: float
    above: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ColumnInfo:
    """One evaluated task of a report; ``chance`` where its unmodified evaluation is stored."""

    task: str
    task_id: int
    chance: ChanceTest | None = None

    def to_dict(self) -> dict:
        head = {"task": self.task, "task_id": self.task_id}
        return head if self.chance is None else {**head, **self.chance.to_dict()}


_FILLED_BY_REPORT = ("paired", "paired_accuracy", "set_level", "vs_other_sets", "own_task_above_chance")


@dataclass
class SetSummary:
    """One intervened set: its own-task change against the other tasks' and its controls',
    and its tests (each None where its evaluations are not stored)."""

    set: str
    set_task_id: int
    target_change: float | None
    others_mean_change: float | None
    specificity_index: float | None
    control_target_change: float | None
    control_target_sd: float | None
    mean_abs_change: float | None
    control_mean_abs_change: float | None
    paired: PairedTest | None = None
    paired_accuracy: PairedTest | None = None
    set_level: SetLevelTest | None = None
    vs_other_sets: VersusOtherSets | None = None
    own_task_above_chance: bool | None = None

    def to_dict(self) -> dict:
        """The JSON entry: the tests present where computed (``set_level`` beside ``paired``,
        null below two controls)."""
        out: dict = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _FILLED_BY_REPORT}
        if self.paired is not None:
            out["paired"] = self.paired.to_dict()
            if self.paired_accuracy is not None:
                out["paired_accuracy"] = self.paired_accuracy.to_dict()
            out["set_level"] = None if self.set_level is None else self.set_level.to_dict()
        if self.vs_other_sets is not None:
            out["vs_other_sets"] = self.vs_other_sets.to_dict()
        out["own_task_above_chance"] = self.own_task_above_chance
        return out


@dataclass
class ReportTests:
    """The summary tests across the included sets, each mean with its sign-flip p-value: the
    specificity index; the own-task change minus the control's; the mean |change| over all
    tasks against the controls'; the counts of significant paired, set-level and
    versus-other-sets tests."""

    n_sets: int = 0
    mean_specificity_index: float | None = None
    specificity_p: float | None = None
    n_controlled: int = 0
    mean_target_minus_control: float | None = None
    target_minus_control_p: float | None = None
    mean_abs_change: float | None = None
    control_mean_abs_change: float | None = None
    abs_change_minus_control_p: float | None = None
    n_paired: int = 0
    paired_statistic: str | None = None
    mean_paired_diff: float | None = None
    n_paired_significant: int = 0
    n_set_level: int = 0
    n_set_level_significant: int = 0
    n_vs_other_sets: int = 0
    mean_vs_other_sets: float | None = None
    vs_other_sets_p: float | None = None
    n_vs_other_sets_significant: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def significant(test: PairedTest | VersusOtherSets | None, sign: int = 0) -> bool:
    """Whether a test's ``p`` is below :data:`ALPHA` (and, with ``sign`` ±1, its ``mean_diff``
    has that sign)."""
    if test is None or test.p is None or test.p >= ALPHA:
        return False
    return sign == 0 or (test.mean_diff > 0) == (sign > 0)


def included_sets(summary: list[SetSummary]) -> list[SetSummary]:
    """The rule of which sets the summary tests count: every set except those whose own task
    the unmodified model does at chance (a set of unknown chance status is counted)."""
    return [e for e in summary if e.own_task_above_chance is not False]
