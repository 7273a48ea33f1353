"""The atlas from Python: ``atlas.open(path)`` gives an :class:`Atlas` to ask.

    >>> import atlas
    >>> a = atlas.open("first.duckdb")
    >>> a.sets(model="smollm2-135m-instruct", method="cgvst").df()
    >>> a.overlap("smollm2-135m-instruct")            # DataFrame, task × task
    >>> a.sql("SELECT * FROM set_overlaps").pl()     # any read-only SQL, as a DuckDB relation

Read-only: every question goes through the same sandboxed read-only connection as ``atlas sql``,
opened for the question and closed after it (an open Atlas never holds the file, so a writer
can run beside a notebook). Answers are DuckDB relations (``.df()``, ``.pl()``, ``.arrow()``,
``.fetchall()``), numpy arrays or dataclasses; the CLI and the server answer from the same
functions. Importing this module loads no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
from sqlalchemy import text

from atlas.errors import AtlasError
from atlas.query import catalog
from atlas.query.core import resolve_model, resolve_task
from atlas.query.neurons import NeuronProfile
from atlas.query.neurons import neuron as neuron_profile
from atlas.query.overlap import overlap_matrix
from atlas.query.overlap import specificity as specificity_rows
from atlas.query.sql import run_sql
from atlas.store import arrays
from atlas.store.db import check_read_schema, connect, db_path
from atlas.store.identity import latest_complete_run

if TYPE_CHECKING:
    from atlas.intervene.report import Report


class Atlas:
    """One atlas database, opened read-only. Use :func:`open`."""

    def __init__(self, path: str | Path | None = None):
        self.path = db_path(path)
        self._engine = connect(self.path, read_only=True)  # a connection per question, no pool
        check_read_schema(self._engine, self.path)
        self._answers = duckdb.connect()  # in memory: the relations of answers live here

    def __repr__(self) -> str:
        return f"Atlas({str(self.path)!r})"

    def __enter__(self) -> Atlas:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Forget the engine and the answers (the database file is never held between calls)."""
        self._engine.dispose()
        self._answers.close()

    # -- any question ---------------------------------------------------------------------

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run one read-only statement (as ``atlas sql``: one SELECT or EXPLAIN, no files).

        Args:
            query: the statement, over the tables and views of the SQL contract (README).
        Returns:
            The answer as a DuckDB relation: ``.df()``, ``.pl()``, ``.arrow()``, or more SQL.
        """
        return self._relation(run_sql(query, self.path))

    # -- what the atlas holds -------------------------------------------------------------

    def models(self) -> duckdb.DuckDBPyRelation:
        """Every stored model (``models`` rows), by id."""
        return self._listing(catalog.models())

    def tasks(self) -> duckdb.DuckDBPyRelation:
        """Every stored task (``tasks`` rows), by id."""
        return self._listing(catalog.tasks())

    def runs(self, model: str | None = None, task: str | None = None,
             method: str | None = None) -> duckdb.DuckDBPyRelation:
        """Scoring runs, optionally of one model, task and method.

        Args:
            model: NAME, NAME@DTYPE, NAME@REVISION or #ID (as the CLI).
            task: a stored task's full name, unique SNI id or #ID.
            method: a scoring method (``cgvst``, ``gv``, ...).
        Returns:
            ``runs`` rows, by run id.
        """
        return self._listing(catalog.runs(self._engine, model, task, method))

    def sets(self, model: str | None = None, task: str | None = None,
             method: str | None = None) -> duckdb.DuckDBPyRelation:
        """Stored neuron sets with their sizes (the ``set_sizes`` view), filtered as :meth:`runs`."""
        return self._listing(catalog.sets(self._engine, model, task, method))

    def members(self, set_id: int) -> duckdb.DuckDBPyRelation:
        """A set's neurons: (layer, neuron) rows, ordered."""
        return self._listing(catalog.members(self._engine, set_id))

    def mask(self, set_id: int) -> np.ndarray:
        """A set's members as a boolean array [n_layers, d_mlp] of its model."""
        model = self._one("SELECT m.n_layers, m.d_mlp FROM neuron_sets s JOIN models m "
                          "USING (model_id) WHERE s.set_id = :s", f"no set #{set_id} in the atlas",
                          s=set_id)
        with self._engine.connect() as conn:
            return arrays.read_set_mask(conn, set_id, *model)

    def scores(self, model: str, task: str, method: str = "cgvst") -> np.ndarray:
        """The scores of the newest complete run of ``method`` for ``model`` on ``task``.

        Returns:
            float32 [n_layers, d_mlp].
        """
        info, task_row = resolve_model(self._engine, model), resolve_task(self._engine, task)
        with self._engine.connect() as conn:
            run_id = latest_complete_run(conn, info["model_id"], task_row["task_id"], method)
            return arrays.read_scores(conn, run_id, info["n_layers"], info["d_mlp"])

    def evaluations(self, model: str | None = None, task: str | None = None,
                    method: str | None = None) -> duckdb.DuckDBPyRelation:
        """Stored evaluations with their effects (the ``evaluation_effects`` view); ``task`` is
        the evaluated task."""
        return self._listing(catalog.evaluations(self._engine, model, task, method))

    # -- questions the CLI answers ----------------------------------------------------------

    def overlap(self, model: str, method: str = "cgvst", measure: str = "jaccard"):
        """The task × task overlap of a model's current sets (``atlas overlap``).

        Args:
            measure: ``jaccard``, ``overlap_coef`` or ``n_shared``.
        Returns:
            A pandas DataFrame indexed and columned by task labels.
        """
        import pandas as pd

        m = overlap_matrix(self._engine, model, method, measure)
        return pd.DataFrame(m.values, index=pd.Index(m.labels, name="task"), columns=m.labels)

    def specificity(self, model: str, method: str = "cgvst") -> duckdb.DuckDBPyRelation:
        """Per task: set size, neurons unique to it, specificity, mean Jaccard to the others
        (``atlas specificity``)."""
        return self._rows(specificity_rows(self._engine, model, method))

    def compare(self, model_a: str, model_b: str, method: str = "cgvst"
                ) -> duckdb.DuckDBPyRelation:
        """Per task both models have: depth of each set, their distance and, for one shape,
        index agreement (``atlas compare``)."""
        from atlas.query.compare import compare_models

        return self._rows(compare_models(self._engine, model_a, model_b, method))

    def agreement(self, model_a: str, model_b: str, method: str = "cgvst") -> dict:
        """Do the two models find the same tasks alike? The Mantel test of their task ×
        task overlap matrices (``atlas compare``'s last line)."""
        from atlas.query.compare import task_similarity_agreement

        return task_similarity_agreement(self._engine, model_a, model_b, method)

    def report(self, model: str, method: str = "cgvst", factor: float = 0.0,
               metric: str = "label_likelihood", config: str | None = None) -> Report:
        """The intervention report (``atlas report``): relative changes, intervals and tests.

        Args:
            config: a prefix of the evaluation configuration's hash, when there are several.
        Returns:
            A :class:`atlas.intervene.report.Report`.
        """
        from atlas.intervene.report import build_report

        return build_report(self._engine, model, method, factor, metric, config)

    def neuron(self, model: str, layer: int, neuron: int) -> NeuronProfile:
        """One neuron: the sets it is in and its score and rank in every complete run (as
        ``GET /models/{model}/neurons/{layer}/{neuron}``)."""
        return neuron_profile(self._engine, model, layer, neuron)

    # -- plumbing ---------------------------------------------------------------------------

    def _relation(self, table: pa.Table) -> duckdb.DuckDBPyRelation:
        return self._answers.from_arrow(table)

    def _rows(self, data: list[dict]) -> duckdb.DuckDBPyRelation:
        return self._relation(pa.Table.from_pylist(data))

    def _listing(self, listing: catalog.Listing) -> duckdb.DuckDBPyRelation:
        with self._engine.connect() as conn:  # DuckDB's Arrow path: the stored types kept
            return self._relation(listing.arrow(conn))

    def _one(self, sql: str, missing: str, **params) -> tuple:
        with self._engine.connect() as conn:
            row = conn.execute(text(sql), params).first()
        if row is None:
            raise AtlasError(missing)
        return tuple(row)


def open(path: str | Path | None = None) -> Atlas:  # noqa: A001 (the DuckDB-style entry point)
    """Open the atlas database at ``path`` read-only (default: ``$ATLAS_DB``, else the default
    atlas). A missing file or another schema is an :class:`atlas.errors.AtlasError`."""
    return Atlas(path)
