"""The served contract: every answer's shape as a pydantic model, the parameters' enums, and the
one error shape. The OpenAPI schema at ``/openapi.json`` is generated from these; answers are
written directly (not re-validated per request) and a test holds every answer to its model.

Timestamps are text in JSON (``YYYY-MM-DD HH:MM:SS[.ffffff]``, UTC) and timestamps in Parquet.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")
Score = float | None  # a statistic that can be undefined (NaN in the computation): null


class Format(str, Enum):
    """How a table is written: a JSON page, CSV (with its header even when empty) or Parquet
    (the database's types)."""

    json = "json"
    csv = "csv"
    parquet = "parquet"


class Measure(str, Enum):
    """A set-pair measure: |A ∩ B| / |A ∪ B|, |A ∩ B| / min(|A|, |B|), or |A ∩ B|."""

    jaccard = "jaccard"
    overlap_coef = "overlap_coef"
    n_shared = "n_shared"


MODEL_SPEC = ("A stored model: NAME, NAME@DTYPE, NAME@REVISION (or a revision prefix) or #ID, "
              "as on the command line; a name that fits several models is a 409 listing them.")
TASK_SPEC = ("A stored task: its full name, its Super-NaturalInstructions id (task195) when one "
             "task has it, or #ID.")
METHOD_SPEC = ("A method its sets were made by (cgvst, cgvst_marker, gv, grad_x_act, lape, act_prob, "
               "gate_prob, random; cgvst-shared and cgvst-specific for split sets).")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Strict):
    """Every error: 404 unknown, 405 method not allowed, 409 ambiguous, 422 bad parameters, 429
    a live model busy, 503 database unavailable, 500 never expected (no internals in the
    message)."""

    error: str = Field(description="What is wrong and how to fix it, in one line.")


class Page(Strict, Generic[T]):
    total: int = Field(description="Rows in the whole answer.")
    offset: int = Field(description="Rows skipped before this page.")
    limit: int = Field(description="Rows a page holds at most.")
    rows: list[T]


class OverviewRow(Strict):
    model: str
    dtype: str
    method: str
    runs: int = Field(description="Runs of this model and method (0: imported sets).")
    complete: int
    running: int
    failed: int
    tasks: int = Field(description="Distinct tasks.")


class ModelRow(Strict):
    model_id: int
    name: str
    family: str | None = Field(description="Architecture (llama, qwen2, ...).")
    n_layers: int
    d_mlp: int = Field(description="Neurons per layer (the MLP's intermediate width).")
    revision: str = Field(description="The weights' hash or revision.")
    dtype: str
    created_at: str


class TaskRow(Strict):
    task_id: int
    name: str
    source: str | None = Field(description="The file or dataset the task was read from.")
    n_instances: int | None
    data_hash: str | None = Field(description="Hash of the data as the atlas stored it.")


class RunRow(Strict):
    run_id: int
    model_id: int
    task_id: int
    method: str
    status: str = Field(description="running, complete or failed; only complete runs count.")
    params: dict[str, Any] | None = Field(description="Everything the run depends on (seeds, "
                                                       "data hash, prompt rule, versions).")
    params_key: str
    n_examples: int | None
    n_tokens: int | None
    n_skipped: int | None
    error: str | None
    started_at: str
    finished_at: str | None


class SetRow(Strict):
    set_id: int
    name: str
    model_id: int
    model: str
    task_id: int | None
    task: str | None
    method: str
    rule: str = Field(description="The selection rule (top:0.05: the global top 5%).")
    size: int
    fraction: float = Field(description="Share of the model's neurons.")


class MemberRow(Strict):
    layer: int
    neuron: int


class EvaluationRow(Strict):
    eval_id: int
    model_id: int
    model: str
    set_id: int | None
    set_name: str | None
    set_task_id: int | None
    set_task: str | None
    method: str | None
    factor: float = Field(description="0 inhibits, > 1 amplifies, 1: unmodified.")
    is_control: bool
    control_seed: int | None
    eval_task_id: int
    eval_task: str
    metric: str
    n: int
    seed: int
    params_key: str
    baseline: Score
    value: Score
    delta: Score
    rel_change: Score


class LayerRow(Strict):
    task: str
    layer: int
    n: int = Field(description="Neurons of the set in this layer.")
    rel_depth: float = Field(description="(layer + 0.5) / n_layers.")
    fraction: float = Field(description="Share of the set in this layer.")
    task_label: str


class SpecificityRow(Strict):
    task: str
    task_id: int
    size: int
    n_unique: int = Field(description="Neurons in no other task's set of this method.")
    specificity: Score = Field(description="n_unique / size.")
    mean_jaccard: Score = Field(description="Mean Jaccard with the other tasks' sets.")


class MethodOverlapRow(BaseModel):
    """One task; besides ``task`` and ``size``, one column per compared method."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "additionalProperties": {"type": "number", "nullable": True}})
    task: str
    size: int


class OverlapMatrix(Strict):
    model: str
    model_id: int
    method: str
    measure: Measure
    tasks: list[str]
    labels: list[str] = Field(description="Short task labels, in the order of tasks.")
    values: list[list[float | None]] = Field(description="[task_i][task_j].")


class CompareRow(Strict):
    task: str
    depth_a: float = Field(description="Mean relative depth of model A's set.")
    depth_b: float
    depth_distance: float = Field(description="Wasserstein distance of the depth distributions.")
    n_shared: int | None = Field(None, description="Shared neurons (models of one shape).")
    jaccard: Score = None
    spearman: Score = Field(None, description="Spearman correlation of the two runs' scores.")


class Agreement(Strict):
    model_a: str
    model_b: str
    method: str
    n_tasks: int
    r: Score = Field(description="Mantel r of the task × task Jaccard matrices.")
    p: Score
    n_permutations: int
    exact: bool


class AgreementError(Strict):
    error: str


class Comparison(Strict):
    tasks: list[CompareRow]
    task_similarity_agreement: Agreement | AgreementError


class NeuronSet(Strict):
    set_id: int
    name: str
    method: str
    rule: str
    task: str | None
    current: bool = Field(description="The current set of its (task, method).")


class NeuronScore(Strict):
    run_id: int
    method: str
    task: str
    score: float
    rank: int = Field(description="1: the highest score of the run.")


class NeuronAnswer(Strict):
    model: str
    model_id: int
    layer: int
    neuron: int
    sets: list[NeuronSet]
    scores: list[NeuronScore]
    current_sets_per_method: dict[str, int]
    specific_to_one_task: dict[str, bool]


class EvidenceContext(Strict):
    task: str
    instance_id: str
    tokens: list[str] = Field(description="The window's tokens as decoded text.")
    activations: list[float] | None = Field(description="The neuron's activation on each token "
                                            "(null for a quantile sample).")
    peak: int = Field(description="The peak token's 0-based place in tokens.")
    activation: float = Field(description="The activation at the peak.")


class QuantileSample(Strict):
    bin: int = Field(description="0: the lowest quarter of the sampled activations.")
    low: float
    high: float
    sample: EvidenceContext


class TaskDensity(Strict):
    task: str
    n_tokens: int
    share_positive: float = Field(description="Share of the task's distinct tokens above 0.")
    mean: float
    hist: list[int] = Field(description="Counts per bin of edges (len(edges) + 1 bins).")


class LogitToken(Strict):
    token: str
    token_id: int
    logit: float = Field(description="Logit change per unit of activation (direct path).")


class NeuronEvidenceAnswer(Strict):
    model: str
    layer: int
    neuron: int
    evidence_id: int | None = Field(description="The evidence run read; null when none is stored.")
    top: list[EvidenceContext] = Field(description="Highest activations, best first.")
    bottom: list[EvidenceContext] = Field(description="Lowest activations, lowest first.")
    quantiles: list[QuantileSample]
    density: list[TaskDensity]
    promoted: list[LogitToken]
    suppressed: list[LogitToken]
    edges: list[float] = Field(description="The density histogram's inner bin edges.")


class TokenNeuron(Strict):
    layer: int
    neuron: int
    n_exemplars: int = Field(description="Exemplars of the neuron that peak on the token.")
    peak: float = Field(description="The largest |activation| among them.")
    tokens: list[str] = Field(description="The matching tokens as stored.")


class TokenNeurons(Strict):
    model: str
    token: str
    sign: int = Field(description="1: the highest activations, -1: the lowest.")
    rows: list[TokenNeuron] = Field(description="Most exemplars on the token first.")


class SetNeuronOrder(str, Enum):
    """score: highest score in the set's run first; specificity: that score against the
    neuron's mean score in the model's other runs of the same method."""

    score = "score"
    specificity = "specificity"


class SetNeuronRow(Strict):
    layer: int
    neuron: int
    score: float | None = Field(description="Its score in the set's run (null: no run).")
    others_mean: float | None = Field(description="Its mean score in the other tasks' runs.")
    ratio: float | None = Field(description="score / others_mean.")
    top_tokens: list[str] = Field(description="Peak tokens of its three highest exemplars.")
    promoted: list[str] = Field(description="The five tokens its output promotes most.")


class SetNeurons(Strict):
    set_id: int
    order: SetNeuronOrder
    rows: list[SetNeuronRow]


class SetPairAnswer(Strict):
    set_a: int
    set_b: int
    n_shared: int = Field(description="Neurons in both sets.")
    n_a_only: int = Field(description="Neurons in set_a alone.")
    n_b_only: int = Field(description="Neurons in set_b alone.")
    jaccard: float | None
    shared: list[list[int]] = Field(description="[layer, neuron] in both (up to limit).")
    a_only: list[list[int]] = Field(description="[layer, neuron] in set_a alone (up to limit).")
    b_only: list[list[int]] = Field(description="[layer, neuron] in set_b alone (up to limit).")


class DisplayRow(Strict):
    name: str
    values: list[float | None]
    intervals: list[list[float] | None]


class ColumnInfo(Strict):
    task: str
    task_id: int | None = None
    accuracy: Score = None
    n: int | None = None
    chance: Score = None
    p: Score = None
    above: bool | None = None


class Paired(Strict):
    statistic: str | None = None
    mean_diff: Score = None
    p: Score = None
    n: int | None = None


class SetLevel(Strict):
    own_mean: Score = None
    controls_mean: Score = None
    controls_sd: Score = None
    n_controls: int | None = None
    diff: Score = None
    t_p: Score = None
    rank: int | None = None
    rank_p: Score = None


class VersusOtherSets(Strict):
    statistic: str | None = None
    own_mean: Score = None
    others_mean: Score = None
    rank: int | None = None
    n_sets: int | None = None
    mean_diff: Score = None
    p: Score = None
    n: int | None = None


class SetSummary(Strict):
    set: str
    set_task_id: int | None = None
    target_change: Score = None
    others_mean_change: Score = None
    specificity_index: Score = None
    control_target_change: Score = None
    control_target_sd: Score = None
    mean_abs_change: Score = None
    control_mean_abs_change: Score = None
    paired: Paired | None = None
    paired_accuracy: Paired | None = None
    set_level: SetLevel | None = None
    vs_other_sets: VersusOtherSets | None = None
    own_task_above_chance: bool | None = None


class ReportTests(BaseModel):
    """The summary tests over the included sets (counts, means and p-values)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "additionalProperties": {"nullable": True, "oneOf": [{"type": "number"},
                                                             {"type": "string"}]}})


class Report(Strict):
    rows: list[str] = Field(description="Intervened sets.")
    columns: list[str] = Field(description="Evaluated tasks.")
    rel_change: list[list[float | None]] = Field(description="[set][task] relative change.")
    intervals: list[list[list[float] | None]] = Field(description="95% intervals of rel_change.")
    row_seeds: list[int | None]
    display_rows: list[DisplayRow]
    columns_info: list[ColumnInfo]
    summary: list[SetSummary]
    tests: ReportTests
    excluded: list[str] = Field(description="Sets left out of the tests, with why.")


class SqlQuery(Strict):
    sql: str = Field(min_length=1, description="One read-only SQL statement.",
                     examples=["SELECT * FROM set_overlaps LIMIT 5"])


class SqlAnswer(Strict):
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool = Field(description="The answer was cut at the server's row limit.")


SetId = Annotated[int, Field(ge=1, le=2**31 - 1)]
NeuronText = Annotated[str, StringConstraints(pattern=r"^\d{1,5}[/:]\d{1,9}$")]


class LiveModel(Strict):
    name: str = Field(description="The loaded model's name.")
    revision: str
    dtype: str
    model_id: int | None = Field(description="The stored model of that name, revision and "
                                             "dtype (null: none stored).")


class LiveLimitsAnswer(Strict):
    max_new_tokens: int
    max_prompt_tokens: int
    wait_s: float = Field(description="How long a request waits for a busy model before a 429.")


class LiveStatus(Strict):
    models: list[LiveModel] = Field(description="The models loaded for /generate and "
                                                "/activations (empty: not enabled).")
    limits: LiveLimitsAnswer
    enable: str | None = Field(description="How to enable live requests, when no model is "
                                           "loaded.")


class LiveSet(Strict):
    set_id: int
    name: str
    task: str | None
    method: str | None
    model_id: int = Field(description="The stored model the set belongs to.")
    size: int


class TryRequest(Strict):
    prompt: str = Field(min_length=1, max_length=20_000, description="Your prompt.")
    model: str | None = Field(None, description="A loaded model's name (default: the only one).")
    sets: list[SetId] = Field(default_factory=list, max_length=16,
                            description="Stored sets, by id; one output each (or their union).")
    neurons: list[NeuronText] = Field(default_factory=list, max_length=256,
                                      description="Single neurons, LAYER/NEURON.")
    factor: float = Field(0.0, ge=-100, le=100, description="0 inhibits, > 1 amplifies.")
    union: bool = Field(False, description="One output for all the sets and neurons together.")
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="At most the server's "
                                       "limit (GET /live); default 32 or that limit if lower.")
    top_k: int = Field(5, ge=1, le=20, description="Next tokens listed per step.")
    temperature: float = Field(0.0, ge=0, le=10, description="0: greedy; above: sampled, the "
                                                            "same draws in every output.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    chat: bool = Field(True, description="The prompt as a user turn of the chat template.")


class ActivationsRequest(Strict):
    text: str = Field(min_length=1, max_length=20_000)
    model: str | None = Field(None, description="A loaded model's name (default: the only one).")
    sets: list[SetId] = Field(default_factory=list, max_length=16,
                            description="Stored sets, by id (their union is read).")
    neurons: list[NeuronText] = Field(default_factory=list, max_length=256,
                                      description="Single neurons, LAYER/NEURON.")
    top: int = Field(5, ge=1, le=50, description="Neurons listed per token.")
    chat: bool = Field(False, description="Render the text as a user turn of the chat template.")


class TokenProbability(Strict):
    token_id: int
    token: str
    prob: float


class GenerationStep(Strict):
    token_id: int
    token: str
    prob: float = Field(description="The chosen token's probability.")
    top: list[TokenProbability] = Field(description="The most probable next tokens, best first.")


class GenerationOutput(Strict):
    label: str = Field(description="default, or the intervention (set id and name).")
    factor: float | None = Field(description="null for the unmodified model.")
    n_neurons: int
    text: str
    steps: list[GenerationStep]
    stop: str = Field(description="end (a stop token) or length.")
    diverged_at: int | None = Field(description="The first step whose token differs from the "
                                                "default's (null: none).")


class TryAnswer(Strict):
    model: LiveModel
    sets: list[LiveSet]
    neurons: list[list[int]]
    factor: float
    prompt_ids: list[int]
    prompt_tokens: list[str]
    outputs: list[GenerationOutput] = Field(description="The default first.")
    first_token_s: float
    seconds: float


class NeuronValue(Strict):
    layer: int
    neuron: int
    value: float


class TokenActivity(Strict):
    token: str
    n_firing: int = Field(description="Neurons read above 0 on this token.")
    mean: float
    max_abs: float
    top: list[NeuronValue]


class ActivationsAnswer(Strict):
    model: LiveModel
    sets: list[LiveSet]
    neurons: list[list[int]] = Field(description="The single neurons asked for.")
    read: list[list[int]] = Field(description="Every neuron read, in the order of values' "
                                              "columns.")
    tokens: list[str]
    token_ids: list[int]
    per_token: list[TokenActivity]
    values: list[list[float]] | None = Field(description="[token][neuron read], when at most "
                                                         "64 neurons are read.")
    seconds: float


TABLE_MEDIA = {"text/csv": {"schema": {"type": "string"}},
               "application/vnd.apache.parquet": {"schema": {"type": "string",
                                                             "format": "binary"}}}
ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in (
    (404, "Unknown model, task, set or path."), (409, "An ambiguous name; the error lists "
                                                      "the candidates."),
    (422, "A bad parameter."), (503, "The database is unavailable or being replaced; retry."))}
LIVE_ERRORS = {**ERRORS, 404: {"model": ErrorBody, "description": "Unknown set or model, or no "
                                "model loaded here (start the server with atlas serve --model)."},
               429: {"model": ErrorBody, "description": "The model is busy with another request "
                                                       "(see Retry-After)."}}


def table_answer(model: type) -> dict:
    """The OpenAPI ``responses`` of a tabular answer: a JSON page of ``model`` rows, CSV or
    Parquet, and the errors."""
    return {200: {"model": Page[model], "content": TABLE_MEDIA,  # type: ignore[valid-type]
                  "description": "A page of rows (format=json), or CSV or Parquet."}, **ERRORS}


def json_answer(model: type, description: str = "The answer.") -> dict:
    return {200: {"model": model, "description": description}, **ERRORS}
