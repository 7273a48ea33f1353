"""The served contract: a typed schema, every answer true to it, one error shape, formats that
pandas and polars read by URL, HEAD, gzip and conditional GET, identity as documented, and a
property-based fuzz of the schema against a real server."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import ingested_tiny, served

pytestmark = pytest.mark.system  # a server, a browser or subprocesses
runner = CliRunner()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """A tiny atlas (sets, an evaluation, and one model in two dtypes) served for real."""
    from atlas.serve.app import create_app

    root = tmp_path_factory.mktemp("contract")
    folder, db, common = ingested_tiny(root)
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--eval-task", "task379",
                              "--eval-task", "task195", "--examples", "4", "--controls", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ingest", *common, "--examples", "4", "--task", "task379",
                              "--task", "task195", "--method", "random"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ingest", *common, "--examples", "2", "--task", "task379",
                              "--dtype", "bfloat16"])
    assert res.exit_code == 0, res.output
    with served(create_app(db, sql_timeout_s=5, sql_max_rows=50)) as url:
        yield url, folder.name


def _get(url: str, path: str, **params) -> httpx.Response:
    return httpx.get(url + path, params=params, timeout=60)


def test_every_operation_declares_a_typed_answer_and_its_errors(base_url):
    schema = _get(base_url[0], "/openapi.json").json()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            ok = op["responses"]["200"]["content"]["application/json"]["schema"]
            assert ok.get("$ref") or ok.get("properties"), (method, path, ok)  # never {}
            for status in ("404", "409", "422", "503"):
                error = op["responses"][status]["content"]["application/json"]["schema"]
                assert error["$ref"].endswith("/ErrorBody"), (method, path, status)
    params = {p["name"]: p for p in schema["paths"]["/sets"]["get"]["parameters"]}
    assert "#ID" in params["model"]["description"]
    assert set(schema["components"]["schemas"]["Format"]["enum"]) == {"json", "csv", "parquet"}
    assert "text/csv" in schema["paths"]["/sets"]["get"]["responses"]["200"]["content"]


def test_every_answer_is_true_to_its_model(base_url):
    from atlas.serve import contract as c

    url, model = base_url
    spec = f"{model}@float32"
    set_id = _get(url, "/sets", model=spec).json()["rows"][0]["set_id"]
    pages = {"/overview": c.OverviewRow, "/models": c.ModelRow, "/tasks": c.TaskRow,
             "/runs": c.RunRow, "/sets": c.SetRow, f"/sets/{set_id}/members": c.MemberRow,
             "/evaluations": c.EvaluationRow}
    for path, row in pages.items():
        c.Page[row].model_validate_json(_get(url, path).content)
    for path, row in {"/layers": c.LayerRow, "/specificity": c.SpecificityRow}.items():
        page = c.Page[row].model_validate_json(_get(url, path, model=spec).content)
        assert page.rows
    c.Page[c.MethodOverlapRow].model_validate_json(
        _get(url, "/method-overlaps", model=spec, versus="random").content)
    c.OverlapMatrix.model_validate_json(_get(url, "/overlaps", model=spec).content)
    c.Comparison.model_validate_json(_get(url, "/compare", model_a=spec, model_b=spec).content)
    report = c.Report.model_validate_json(_get(url, "/reports", model=spec).content)
    assert report.rows and report.summary
    c.NeuronAnswer.model_validate_json(_get(url, f"/models/{spec}/neurons/0/1").content)
    assert c.SetNeurons.model_validate_json(_get(url, f"/sets/{set_id}/neurons").content).rows
    answer = httpx.post(url + "/sql", json={"sql": "SELECT 1 AS one"})
    assert c.SqlAnswer.model_validate_json(answer.content).rows == [{"one": 1}]


def test_one_error_shape_for_every_failure(base_url):
    url, model = base_url
    cases = [("/models", {"limit": 0}, 422), ("/nowhere", {}, 404), ("/sets", {"model": "no"}, 404),
             ("/overlaps", {"model": f"{model}@float32", "format": "csv"}, 422),
             ("/sets", {"model": model}, 409)]  # two dtypes of one model
    for path, params, status in cases:
        answer = _get(url, path, **params)
        assert answer.status_code == status, (path, answer.text)
        assert list(answer.json()) == ["error"] and "Traceback" not in answer.text
    ambiguous = _get(url, "/sets", model=model).json()["error"]
    assert "@float32" in ambiguous and "@bfloat16" in ambiguous  # the candidates
    assert httpx.post(url + "/models").status_code == 405
    assert list(httpx.post(url + "/models").json()) == ["error"]
    bad_sql = httpx.post(url + "/sql", json={"sql": "SELEC nonsense"})
    assert bad_sql.status_code == 422 and list(bad_sql.json()) == ["error"]


def test_pandas_and_polars_read_every_table_by_url(base_url):
    import pandas as pd
    import polars as pl

    url, model = base_url
    for fmt, read_pd, read_pl in (("csv", pd.read_csv, pl.read_csv),
                                  ("parquet", pd.read_parquet, pl.read_parquet)):
        runs = f"{url}/runs?format={fmt}"
        assert len(read_pd(runs)) == len(read_pl(runs)) == _get(url, "/runs").json()["total"]
        empty = f"{url}/sets?method=none&format={fmt}"  # no rows: still the columns
        assert list(read_pd(empty).columns) == read_pl(empty).columns and len(read_pd(empty)) == 0
        assert "set_id" in read_pl(empty).columns
        spec = f"{url}/specificity?model={model}@float32&format={fmt}"
        assert "n_unique" in read_pd(spec).columns
    parquet = pl.read_parquet(f"{url}/runs?format=parquet")
    assert parquet.schema["started_at"] == pl.Datetime("us")  # the database's types
    sql_csv = httpx.post(url + "/sql?format=csv", json={"sql": "SELECT 1 AS a WHERE false"})
    assert sql_csv.text.strip() == '"a"'


def test_head_gzip_and_conditional_get(base_url):
    url, _ = base_url
    full = _get(url, "/runs")
    assert full.headers["content-encoding"] == "gzip" and full.headers["cache-control"]
    head = httpx.head(url + "/runs")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == full.headers["etag"]
    again = httpx.get(url + "/runs", headers={"If-None-Match": full.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert _get(url, "/runs", limit=1).headers["etag"] != full.headers["etag"]


def test_the_schema_fuzz_finds_nothing(base_url):
    """Every operation, generated from the schema with a fixed seed, every check on."""
    url, _ = base_url
    operations, failures, calls = fuzz_schema(url)
    assert not failures, "\n".join(failures[:10])
    assert {op.label for op in operations} == set(calls) and len(operations) >= 14
    assert len(calls) >= 5 * len(operations)


def fuzz_schema(url: str, labels: set[str] | None = None
                ) -> tuple[list, list[str], list[str]]:
    """Fuzz every operation of the server's schema (or those named by ``labels``):
    (operations, failures, the label of every call made)."""
    import schemathesis

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()
                  if labels is None or result.ok().label in labels]
    failures: list[str] = []
    calls: list[str] = []
    for operation in operations:
        try:
            _fuzzer(operation, url, failures, calls)()
        except Exception as err:  # hypothesis re-raises the first failure, already collected
            if not failures or not failures[-1].startswith(operation.label):
                failures.append(f"{operation.label}: {type(err).__name__}: {str(err)[:400]}")
    return operations, failures, calls


# A schema-valid request can still be refused for what it means: bad SQL, or a neuron outside the
# loaded model (422). Positive data acceptance holds for every other operation.
LENIENT = {"POST /sql", "POST /generate", "POST /activations"}


def _fuzzer(operation, url: str, failures: list[str], calls: list[str]):
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import checks as available

    every = [available.not_a_server_error, available.status_code_conformance,
             available.content_type_conformance, available.response_headers_conformance,
             available.response_schema_conformance, available.negative_data_rejection,
             available.positive_data_acceptance, available.unsupported_method,
             available.missing_required_header]

    @given(case=operation.as_strategy())
    @settings(max_examples=12, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def fuzz(case):
        calls.append(operation.label)
        try:
            checks = [c for c in every if not (operation.label in LENIENT and
                                               c is available.positive_data_acceptance)]
            case.call_and_validate(base_url=url, checks=checks)
        except Exception as err:  # collected: one report for the whole schema
            failures.append(f"{operation.label}: {str(err)[:600]}")
            raise
    return fuzz


def test_answers_decode_as_json_text(base_url):
    url, model = base_url
    answer = _get(url, "/models")
    assert json.loads(answer.text)["total"] >= 2
    assert io.BytesIO(answer.content).read(1) == b"{"
