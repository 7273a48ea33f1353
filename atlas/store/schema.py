"""The atlas tables as SQLAlchemy Core ``Table`` objects: the schema the migrations build (a test
checks the two agree), used by the store's reads and writes."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    JSON,
    REAL,
    TIMESTAMP,
    BigInteger,
    Boolean,
    Column,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
)

metadata = MetaData()

models = Table(
    "models", metadata,
    Column("model_id", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("family", String),
    Column("n_layers", Integer, nullable=False),
    Column("d_mlp", Integer, nullable=False),
    Column("revision", String, nullable=False),
    Column("dtype", String, nullable=False),
    Column("created_at", TIMESTAMP),
)
tasks = Table(
    "tasks", metadata,
    Column("task_id", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("source", String),
    Column("n_instances", Integer),
    Column("data_hash", String, nullable=False),
)
runs = Table(
    "runs", metadata,
    Column("run_id", Integer, primary_key=True),
    Column("model_id", Integer, nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("method", String, nullable=False),
    Column("status", String, nullable=False),
    Column("params", JSON),
    Column("params_key", String, nullable=False),
    Column("n_examples", Integer),
    Column("n_tokens", BigInteger),
    Column("n_skipped", Integer),
    Column("error", String),
    Column("started_at", TIMESTAMP),
    Column("finished_at", TIMESTAMP),
)
neuron_scores = Table(
    "neuron_scores", metadata,
    Column("run_id", Integer, nullable=False),
    Column("layer", SmallInteger, nullable=False),
    Column("neuron", Integer, nullable=False),
    Column("score", REAL, nullable=False),
)
neuron_sets = Table(
    "neuron_sets", metadata,
    Column("set_id", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("model_id", Integer, nullable=False),
    Column("task_id", Integer),
    Column("run_id", Integer),
    Column("rule", String, nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", TIMESTAMP),
    Column("method", String),
)
neuron_set_members = Table(
    "neuron_set_members", metadata,
    Column("set_id", Integer, nullable=False),
    Column("layer", SmallInteger, nullable=False),
    Column("neuron", Integer, nullable=False),
)
run_checkpoints = Table(
    "run_checkpoints", metadata,
    Column("run_id", Integer, primary_key=True),
    Column("chunk_size", Integer, nullable=False),
    Column("n_done", Integer, nullable=False),
    Column("n_tokens", BigInteger, nullable=False),
    Column("sums", LargeBinary, nullable=False),
    Column("updated_at", TIMESTAMP),
)
evaluations = Table(
    "evaluations", metadata,
    Column("eval_id", Integer, primary_key=True),
    Column("model_id", Integer, nullable=False),
    Column("set_id", Integer),
    Column("factor", Double, nullable=False),
    Column("is_control", Boolean, nullable=False),
    Column("control_seed", Integer),
    Column("eval_task_id", Integer, nullable=False),
    Column("metric", String, nullable=False),
    Column("value", Double, nullable=False),
    Column("n", Integer, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("params", JSON),
    Column("params_key", String, nullable=False),
    Column("created_at", TIMESTAMP),
)
evaluation_examples = Table(
    "evaluation_examples", metadata,
    Column("eval_id", Integer, nullable=False),
    Column("example", Integer, nullable=False),
    Column("instance_id", String, nullable=False),
    Column("gold", String, nullable=False),
    Column("predicted", String),
    Column("gold_logprob", Double),
    Column("gold_prob", Double),
    Column("correct", Boolean, nullable=False),
)
evidence_runs = Table(
    "evidence_runs", metadata,
    Column("evidence_id", Integer, primary_key=True),
    Column("model_id", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("params", JSON),
    Column("params_key", String, nullable=False),
    Column("n_sequences", Integer),
    Column("n_tokens", BigInteger),
    Column("started_at", TIMESTAMP),
    Column("finished_at", TIMESTAMP),
)
evidence_contexts = Table(
    "evidence_contexts", metadata,
    Column("evidence_id", Integer, nullable=False),
    Column("context_id", Integer, nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("instance_id", String, nullable=False),
    Column("token_ids", ARRAY(Integer), nullable=False),
    Column("tokens", ARRAY(String), nullable=False),
    Column("peak", SmallInteger, nullable=False),
)
neuron_exemplars = Table(
    "neuron_exemplars", metadata,
    Column("evidence_id", Integer, nullable=False),
    Column("layer", SmallInteger, nullable=False),
    Column("neuron", Integer, nullable=False),
    Column("sign", SmallInteger, nullable=False),
    Column("rank", SmallInteger, nullable=False),
    Column("context_id", Integer, nullable=False),
    Column("activation", REAL, nullable=False),
    Column("activations", ARRAY(REAL), nullable=False),
)
neuron_quantiles = Table(
    "neuron_quantiles", metadata,
    Column("evidence_id", Integer, nullable=False),
    Column("layer", SmallInteger, nullable=False),
    Column("neuron", Integer, nullable=False),
    Column("bin", SmallInteger, nullable=False),
    Column("low", REAL, nullable=False),
    Column("high", REAL, nullable=False),
    Column("activation", REAL, nullable=False),
    Column("context_id", Integer, nullable=False),
)
neuron_density = Table(
    "neuron_density", metadata,
    Column("evidence_id", Integer, nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("layer", SmallInteger, nullable=False),
    Column("neuron", Integer, nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("n_positive", Integer, nullable=False),
    Column("mean", REAL, nullable=False),
    Column("hist", ARRAY(Integer), nullable=False),
)
neuron_logits = Table(
    "neuron_logits", metadata,
    Column("model_id", Integer, nullable=False),
    Column("layer", SmallInteger, nullable=False),
    Column("neuron", Integer, nullable=False),
    Column("promoted_ids", ARRAY(Integer), nullable=False),
    Column("promoted", ARRAY(REAL), nullable=False),
    Column("suppressed_ids", ARRAY(Integer), nullable=False),
    Column("suppressed", ARRAY(REAL), nullable=False),
)
vocab = Table(
    "vocab", metadata,
    Column("model_id", Integer, nullable=False),
    Column("token_id", Integer, nullable=False),
    Column("token", String, nullable=False),
)
