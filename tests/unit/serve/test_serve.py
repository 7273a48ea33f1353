"""`atlas serve` through a real uvicorn server on 127.0.0.1 and an HTTP client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import PUBLISHED_DIR, ROOT_DIR, SNI_DIR, save_tiny, served

pytestmark = pytest.mark.system  # a server, a browser or subprocesses

runner = CliRunner()


@pytest.fixture(scope="module")
def atlas_db(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    db = base / "a.duckdb"
    folder = save_tiny("llama", base / "tiny")
    res = runner.invoke(app, ["ingest", "--model", str(folder), "--sni-dir", str(SNI_DIR), "--db",
                              str(db), "--shots", "1", "--examples", "3", "--task", "task195",
                              "--task", "task379", "--task", "task391", "--exemplars", "0"])
    assert res.exit_code == 0, res.output  # the evidence read below is describe's
    for task in ("task195", "task379", "task391"):
        res = runner.invoke(app, ["import", str(PUBLISHED_DIR / f"{task}.pth"), "--model",
                                  "llama-2-7b-chat", "--task", task, "--layers", "32", "--d-mlp",
                                  "11008", "--db", str(db)])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["describe", "--model", str(folder), "--sni-dir", str(SNI_DIR),
                              "--db", str(db), "--task", "task195", "--examples", "3", "--k", "3"])
    assert res.exit_code == 0, res.output
    return db, folder


@pytest.fixture(scope="module")
def server(atlas_db):
    from atlas.serve.app import create_app

    app = create_app(atlas_db[0], sql_timeout_s=5, sql_max_rows=50)
    with served(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_endpoints_answer_from_the_database(server, atlas_db):
    name = atlas_db[1].name
    models = server.get("/models").json()
    assert {r["name"] for r in models["rows"]} == {name, "llama-2-7b-chat"}
    assert models["total"] == 2
    assert server.get("/tasks").json()["total"] == 3
    runs = server.get("/runs", params={"model": name}).json()
    assert runs["total"] == 3 and all(r["status"] == "complete" for r in runs["rows"])
    sets = server.get("/sets", params={"model": "llama-2-7b-chat"}).json()["rows"]
    assert len(sets) == 3 and all(s["size"] == 17612 for s in sets)
    members = server.get(f"/sets/{sets[0]['set_id']}/members", params={"limit": 5}).json()
    assert members["total"] == 17612 and len(members["rows"]) == 5
    layer, neuron = members["rows"][0]["layer"], members["rows"][0]["neuron"]
    info = server.get(f"/models/llama-2-7b-chat/neurons/{layer}/{neuron}").json()
    assert sets[0]["set_id"] in {s["set_id"] for s in info["sets"]}
    in_sql = server.post("/sql", json={"sql": f"SELECT set_id FROM neuron_set_members WHERE "
                                              f"layer = {layer} AND neuron = {neuron} AND set_id "
                                              f"IN (SELECT set_id FROM neuron_sets WHERE model_id"
                                              f" = {info['model_id']}) ORDER BY set_id"}).json()
    assert [s["set_id"] for s in info["sets"]] == [r["set_id"] for r in in_sql["rows"]]
    tiny = server.get(f"/models/{name}/neurons/1/7").json()
    assert len(tiny["scores"]) == 3
    for r in tiny["scores"]:  # rank: 1 + scores above it in the run, counted in SQL
        above = server.post("/sql", json={"sql": f"SELECT count(*) AS n FROM neuron_scores WHERE "
                                                 f"run_id = {r['run_id']} AND score > "
                                                 f"(SELECT score FROM neuron_scores WHERE run_id = "
                                                 f"{r['run_id']} AND layer = 1 AND neuron = 7)"})
        assert r["rank"] == above.json()["rows"][0]["n"] + 1
        score = server.post("/sql", json={"sql": f"SELECT score FROM neuron_scores WHERE run_id ="
                                                 f" {r['run_id']} AND layer = 1 AND neuron = 7"})
        assert r["score"] == pytest.approx(score.json()["rows"][0]["score"], rel=1e-6)
    overlap = server.get("/overlaps", params={"model": "llama-2-7b-chat"}).json()
    assert overlap["labels"] == ["task195", "task379", "task391"]
    assert all(overlap["values"][k][k] == 1.0 for k in range(3))
    compare = server.get("/compare", params={"model_a": name, "model_b": "llama-2-7b-chat"}).json()
    assert compare["task_similarity_agreement"]["n_tasks"] == 3
    csv_text = server.get("/tasks", params={"format": "csv"}).text
    assert csv_text.splitlines()[0].startswith('"task_id"')
    assert server.get("/tasks", headers={"accept": "text/csv"}).text == csv_text
    parquet = server.get("/runs", params={"format": "parquet"})
    assert parquet.content[:4] == b"PAR1"
    assert server.get("/openapi.json").json()["info"]["title"] == "atlas"
    docs = server.get("/docs").text  # works offline: Swagger UI from the installed package
    assert "/static/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs
    assert server.get("/static/swagger/swagger-ui-bundle.js").status_code == 200


def test_errors_are_json_with_the_right_status(server):
    assert server.get("/runs", params={"model": "nope"}).status_code == 404
    assert server.get("/models/llama-2-7b-chat/neurons/99/0").status_code == 404
    assert server.get("/sets/999999/members").status_code == 404
    assert server.get("/tasks", params={"limit": 0}).status_code == 422
    assert server.get("/tasks", params={"format": "xml"}).status_code == 422
    res = server.get("/reports", params={"model": "llama-2-7b-chat"})
    assert res.status_code == 422 and "run atlas ablate first" in res.json()["error"]


def test_sql_sandbox_holds_over_http(server, tmp_path):
    ok = server.post("/sql", json={"sql": "SELECT name FROM models ORDER BY name"})
    assert ok.status_code == 200 and len(ok.json()["rows"]) == 2
    capped = server.post("/sql", json={"sql": "SELECT * FROM range(1000)"}).json()
    assert len(capped["rows"]) == 50 and capped["truncated"]
    blob = server.post("/sql", json={"sql": "SELECT '\\xFF\\x00'::BLOB AS b"}).json()
    assert blob["rows"] == [{"b": "ff00"}]  # BLOBs as hex, as `atlas sql` writes them
    odd = server.post("/sql", json={"sql": "SELECT 'NaN'::DOUBLE AS x, INTERVAL 90 SECOND AS d, "
                                           "1 AS n, 2 AS n"})
    assert odd.status_code == 200  # strict JSON: NaN as null
    assert odd.json()["rows"] == [{"x": None, "d": "00:01:30", "n": 1, "n_1": 2}]
    target = tmp_path / "x.csv"
    for statement in [f"COPY (SELECT 1) TO '{target}'", "ATTACH 'other.duckdb'", "INSTALL httpfs",
                      "LOAD httpfs", "SELECT * FROM read_csv('/etc/passwd')",
                      "SELECT * FROM read_text('/etc/passwd')", "PRAGMA threads = 1",
                      "SET threads = 1", "SELECT 1; SELECT 2", "DELETE FROM runs"]:
        res = server.post("/sql", json={"sql": statement})
        assert res.status_code == 422 and "error" in res.json(), statement
    assert not target.exists()
    slow = server.post("/sql", json={"sql": "SELECT count(*) FROM range(100000000000)"})
    assert slow.status_code == 422 and "limit" in slow.json()["error"]


def test_ingest_writes_while_the_server_runs(server, atlas_db):
    db, folder = atlas_db
    before = server.get("/runs").json()["total"]
    scored = len(server.get(f"/models/{folder.name}/neurons/1/7").json()["scores"])
    out = subprocess.run([sys.executable, "-c", "from cli.main import app; app()", "ingest",
                          "--model", str(folder), "--sni-dir", str(SNI_DIR), "--db", str(db),
                          "--shots", "1", "--examples", "3", "--task", "task512",
                          "--exemplars", "0"],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert server.get("/runs").json()["total"] == before + 1
    neuron = server.get(f"/models/{folder.name}/neurons/1/7").json()  # not answered from memory
    assert len(neuron["scores"]) == scored + 1 and neuron["scores"][-1]["task"].startswith("task512")


def test_sql_runs_alongside_other_requests(server):
    """A long SQL query and the structured endpoints share the open database."""
    answers: list[int] = []
    slow = threading.Thread(target=lambda: answers.append(server.post(
        "/sql", json={"sql": "SELECT count(*) AS n FROM range(300000000)"}).status_code))
    slow.start()
    statuses = []
    while slow.is_alive():
        statuses.append(server.get("/models").status_code)
    slow.join()
    assert answers == [200] and len(statuses) > 1 and set(statuses) == {200}, statuses


def test_a_writer_gets_in_under_continuous_load(server, atlas_db):
    """Requests keep the database open only while one is in flight, and let a waiting writer
    in even when they never stop."""
    db, folder = atlas_db
    stop = threading.Event()
    statuses: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=str(server.base_url), timeout=60) as c:
            while not stop.is_set():
                statuses.append(c.get(f"/models/{folder.name}/neurons/1/7").status_code)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        time.sleep(0.5)
        write = (f"from atlas.store import open_db, repository as repo\n"
                 f"with open_db(r'{db}').begin() as c:\n"
                 f"    repo.ensure_task(c, 'task_written_under_load', 'test', 0, 'h')\n")
        out = subprocess.run([sys.executable, "-c", write], cwd=ROOT_DIR, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "ATLAS_LOCK_WAIT": "20"})
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert out.returncode == 0, out.stderr
    assert len(statuses) > 20 and set(statuses) == {200}
    assert server.get("/tasks", params={"limit": 1000}).json()["total"] >= 4


def _browser():
    import shutil

    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium) — browser test skipped")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium with chromium-driver on this machine (Debian: apt-get install "
                    "chromium chromium-driver) — browser test skipped")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1800"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def screenshot(browser, path) -> None:
    """Write the page as a picture (a real one: not blank) and say where."""
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    print(f"screenshot: {path}")


def test_page_in_a_real_browser(server, atlas_db, tmp_path):
    """The page as a browser: state in the URL (permalinks, Back, deep links), both sets of a
    heatmap cell, keyboard use, panels that follow the model, and a narrow window."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    text = lambda css: browser.find_element(By.CSS_SELECTOR, css).text  # noqa: E731
    try:
        browser.get(str(server.base_url))
        wait = WebDriverWait(browser, 30)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "button.model")))
        models = browser.find_elements(By.CSS_SELECTOR, "button.model")
        assert {b.text.split()[0] for b in models} == {atlas_db[1].name, "llama-2-7b-chat"}
        assert "llama-2-7b-chat" in text("#overview")
        next(b for b in models if b.text.startswith("llama-2-7b-chat")).click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "rect.cell")) == 9)
        assert "model=%23" in browser.current_url  # the state is in the URL, the model by id
        assert "cgvst" in text("#heatmap-title") and "llama-2-7b-chat" in text("#heatmap-title")
        assert "diagonal grey" in text("#heatmap")  # the colour scale, off-diagonal values
        cells = browser.find_elements(By.CSS_SELECTOR, "rect.cell")
        cells[1].click()  # row 0, column 1: both tasks' sets
        wait.until(ec.presence_of_element_located((By.ID, "set-title-b")))
        first = (text("#set-title"), text("#set-title-b"))
        assert "task195" in first[0] and "task379" in first[1] and "17612 neurons" in first[0]
        assert "neurons in both sets" in text("#set-pair")
        # the pair view: the neurons both sets hold and each alone, counted, with links
        ids = [int(t.rsplit("#", 1)[1].rstrip(")")) for t in first]
        api = server.get(f"/sets/{ids[0]}/pair/{ids[1]}").json()
        heads = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#pair-view h3")]
        assert heads == [f"in both ({api['n_shared']})", f"only task195 ({api['n_a_only']})",
                         f"only task379 ({api['n_b_only']})"]
        assert len(browser.find_elements(By.CSS_SELECTOR, "#pair-view a.member")) == sum(
            min(200, api[n]) for n in ("n_shared", "n_a_only", "n_b_only"))
        # a set's neurons paged: 25 more on request, the state in the URL; members as CSV
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.set-neurons tbody tr")) == 50
        browser.find_element(By.ID, "set-more").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR,
                                                 "table.set-neurons tbody tr")) == 100)
        assert "sl=50" in browser.current_url
        assert "format=csv" in browser.find_element(By.CSS_SELECTOR, "a.csv").get_attribute("href")
        browser.back()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR,
                                                 "table.set-neurons tbody tr")) == 50)
        cells = browser.find_elements(By.CSS_SELECTOR, "rect.cell")
        cells[5].send_keys(Keys.ENTER)  # by keyboard: row 1, column 2
        wait.until(lambda b: "task391" in text("#set-title-b"))
        assert "task379" in text("#set-title")
        browser.back()  # Back returns to the previous cell, not out of the page
        wait.until(lambda b: "task379" in text("#set-title-b"))
        browser.find_element(By.CSS_SELECTOR, "a.member").click()
        wait.until(lambda b: "in " in text("#neuron"))
        link = browser.current_url
        assert "neuron=" in link and "row=" in link and "col=" in link
        browser.get("about:blank")
        browser.get(link)  # a deep link opens where it points
        wait.until(lambda b: b.find_elements(By.ID, "neuron-title")
                   and b.find_elements(By.ID, "set-title-b"))
        assert text("#set-title-b") == first[1]
        legend = browser.find_elements(By.CSS_SELECTOR, "#layers-legend button")
        assert len(legend) == 3 and "relative depth" in text("#layers")
        legend[1].click()  # isolate one task: the others fade and stay faded
        browser.execute_script("document.activeElement.blur()")
        faded = [p.get_attribute("opacity") for p in
                 browser.find_elements(By.CSS_SELECTOR, "polyline.profile")]
        assert faded.count("1") == 1 and faded.count("0.12") == 2
        screenshot(browser, tmp_path / "atlas-serve.png")
        tiny = next(b for b in browser.find_elements(By.CSS_SELECTOR, "button.model")
                    if b.text.startswith(atlas_db[1].name))
        tiny.click()  # another model: the previous model's set and neuron are gone
        wait.until(lambda b: text("#set") == "" and text("#neuron") == ""
                   and atlas_db[1].name in text("#heatmap-title"))
        browser.find_element(By.ID, "sql-go").click()
        wait.until(lambda b: b.find_elements(By.ID, "sql-count"))
        browser.set_window_size(420, 900)  # usable narrow: nothing wider than the window
        wide = browser.execute_script("return document.documentElement.scrollWidth")
        assert wide <= 420, (wide, browser.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect()"
            ".right > 421).slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"))
        browser.save_screenshot(str(tmp_path / "atlas-serve-420.png"))
        browser.get(str(server.base_url) + "/docs")  # the API docs render without a CDN
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10)
    finally:
        browser.quit()


def test_neuron_evidence_served_and_shown(server, atlas_db, tmp_path):
    """The evidence endpoint and the token search answer from the stored run; the page's
    neuron view shows the contexts with per-token colours whose values appear on hover."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    name = atlas_db[1].name
    ev = server.get(f"/models/{name}/neurons/1/5/evidence").json()
    assert len(ev["top"]) == 3 and len(ev["promoted"]) == 20 and ev["density"][0]["n_tokens"] > 0
    token = ev["top"][0]["tokens"][ev["top"][0]["peak"]]
    found = server.get(f"/models/{name}/token-neurons", params={"token": token, "limit": 1000})
    assert found.status_code == 200 and {"layer": 1, "neuron": 5} in [
        {"layer": r["layer"], "neuron": r["neuron"]} for r in found.json()["rows"]]
    assert server.get("/models/llama-2-7b-chat/token-neurons",
                      params={"token": "x"}).status_code == 404  # no evidence stored for it
    assert server.get(f"/models/{name}/neurons/99/0/evidence").status_code == 404
    from dataclasses import asdict

    from atlas.query.evidence import neuron_evidence
    from atlas.store.db import open_db

    engine = open_db(atlas_db[0], read_only=True)
    try:  # answered from the server's memory (contexts, vocabulary, logit effects): SQL's rows
        for layer, neuron in ((0, 0), (1, 5), (1, 47), (0, 30)):
            direct = json.loads(json.dumps(asdict(neuron_evidence(engine, name, layer, neuron))))
            assert server.get(f"/models/{name}/neurons/{layer}/{neuron}/evidence").json() == direct
        from atlas.query.evidence import neurons_for_token

        peak_tokens = {c["tokens"][c["peak"]] for c in ev["top"] + ev["bottom"]}
        for token in sorted(peak_tokens)[:4] + ["no such token"]:
            for sign in (1, -1):
                direct = json.loads(json.dumps(neurons_for_token(engine, name, token, 1000, sign)))
                served = server.get(f"/models/{name}/token-neurons",
                                    params={"token": token, "sign": sign, "limit": 1000})
                assert served.json()["rows"] == direct, token
    finally:
        engine.dispose()
    tiny_set = server.get("/sets", params={"model": name, "task": "task195",
                                           "method": "cgvst"}).json()["rows"][0]
    listed = server.get(f"/sets/{tiny_set['set_id']}/neurons", params={"limit": 3}).json()
    assert len(listed["rows"]) == 3 and listed["order"] == "score"
    assert [r["score"] for r in listed["rows"]] == sorted((r["score"] for r in listed["rows"]),
                                                          reverse=True)
    assert all(len(r["promoted"]) == 5 and r["top_tokens"] for r in listed["rows"])
    assert server.get("/sets/99999/neurons").status_code == 404
    model_id = next(r["model_id"] for r in server.get("/models").json()["rows"] if r["name"] == name)
    browser = _browser()
    try:
        browser.get(f"{server.base_url}/#model=%23{model_id}&neuron=1/5")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#ex-top .ctx span.t"))
        spans = browser.find_elements(By.CSS_SELECTOR, "#ex-top .ctx span.t.peak")
        assert len(spans) == 3
        ActionChains(browser).move_to_element(spans[0]).perform()
        title = spans[0].get_attribute("title")
        value = float(title.rsplit(": ", 1)[1])
        assert value == pytest.approx(ev["top"][0]["activation"], abs=1e-3)
        assert "rgba(26, 95, 180" in spans[0].value_of_css_property("background-color") or \
            "rgba(26,95,180" in spans[0].get_attribute("style")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#promoted span")) == 20
        assert browser.find_elements(By.CSS_SELECTOR, "#density .bar")
        assert browser.find_elements(By.CSS_SELECTOR, "#task-profile .bar")
        browser.get(f"{server.base_url}/#model=%23{model_id}&row=task195&col=task195")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "table.set-neurons a.member"))
        first_row = browser.find_element(By.CSS_SELECTOR, "table.set-neurons tbody tr").text
        top = server.get(f"/sets/{tiny_set['set_id']}/neurons").json()["rows"][0]
        assert first_row.startswith(f"{top['layer']}/{top['neuron']}")
        screenshot(browser, tmp_path / "atlas-neuron.png")
    finally:
        browser.quit()


def test_unavailable_database_is_503(tmp_path):
    import duckdb
    from fastapi.testclient import TestClient

    from atlas.serve.app import create_app

    missing = TestClient(create_app(tmp_path / "none.duckdb")).get("/models")
    assert missing.status_code == 503 and "no atlas database" in missing.json()["error"]
    foreign = tmp_path / "foreign.duckdb"
    duckdb.connect(str(foreign)).execute("CREATE TABLE x AS SELECT 1 AS a").close()
    res = TestClient(create_app(foreign)).get("/models")
    assert res.status_code == 503 and "not an atlas database" in res.json()["error"]


def test_a_swapped_file_is_refused_at_once(tmp_path, atlas_db):
    import shutil

    import duckdb
    from fastapi.testclient import TestClient

    from atlas.serve.app import create_app

    db = tmp_path / "served.duckdb"
    shutil.copy(atlas_db[0], db)
    client = TestClient(create_app(db))
    assert client.get("/models").status_code == 200
    foreign = tmp_path / "foreign.duckdb"
    duckdb.connect(str(foreign)).execute("CREATE TABLE x AS SELECT 1 AS a").close()
    os.replace(foreign, db)  # within the 2 s between periodic schema checks
    res = client.get("/models")
    assert res.status_code == 503 and "not an atlas database" in res.json()["error"]
