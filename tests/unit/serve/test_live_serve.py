"""Trying sets live through a real server (`atlas serve --model`): typed answers equal to the
library's, the busy path, bounds, a server without models, the database untouched, and the
page's panel in a real browser."""

from __future__ import annotations

import hashlib
import threading
import time

import httpx
import numpy as np
import pytest

from atlas.serve import contract
from tests.helpers import ingested_tiny, served
from tests.unit.serve.test_serve import _browser, screenshot

pytestmark = pytest.mark.system  # a server and a browser

WAIT_S = 0.5


@pytest.fixture(scope="module")
def live_atlas(tmp_path_factory):
    from atlas.models.loading import load_model
    from atlas.serve.app import create_app
    from atlas.serve.live import LiveLimits, LiveModels

    folder, db, _ = ingested_tiny(tmp_path_factory.mktemp("live-serve"))
    loaded = load_model(str(folder), device="cpu", dtype="float32")
    live = LiveModels([loaded], LiveLimits(max_new_tokens=8, max_prompt_tokens=40,
                                           wait_s=WAIT_S))
    app = create_app(db, live=live)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with served(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, live, loaded, db
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # nothing was written


def test_generate_and_activations_answer_as_the_library_does(live_atlas):
    from atlas.intervene.trying import TryOptions, set_activations, try_sets
    from atlas.store import open_db

    client, _, loaded, db = live_atlas
    status = client.get("/live").json()
    contract.LiveStatus.model_validate(status)
    assert [m["name"] for m in status["models"]] == ["tiny"] and status["enable"] is None
    body = {"prompt": "hello there", "sets": [1, 2], "factor": 0, "max_new_tokens": 6}
    answer = client.post("/generate", json=body)
    assert answer.status_code == 200, answer.text
    typed = contract.TryAnswer.model_validate(answer.json())
    assert [s.set_id for s in typed.sets] == [1, 2] and len(typed.outputs) == 3
    assert typed.model.model_id == 1 and typed.model.dtype == "float32"
    engine = open_db(db, read_only=True, create=False)
    try:
        direct = try_sets(engine, loaded, "hello there", [1, 2], [],
                          TryOptions(factor=0.0, max_new_tokens=6))
        acts = set_activations(engine, loaded, "some text", [], [(1, 3), (0, 2)])
    finally:
        engine.dispose()
    assert [[s.token_id for s in o.steps] for o in typed.outputs] == \
        [[s.token_id for s in o.steps] for o in direct.result.outputs]
    got = client.post("/activations", json={"text": "some text", "neurons": ["1/3", "0:2"]})
    assert got.status_code == 200, got.text
    typed_acts = contract.ActivationsAnswer.model_validate(got.json())
    assert typed_acts.read == [[0, 2], [1, 3]]
    np.testing.assert_allclose(np.array(typed_acts.values), acts.activations.values, atol=1e-6)


def test_a_busy_model_waits_within_a_bound_then_refuses(live_atlas):
    client, live, _, _ = live_atlas
    body = {"prompt": "hi", "neurons": ["0/1"], "max_new_tokens": 2}
    with live.using(None):  # another generation holds the model
        started = time.monotonic()
        refused = client.post("/generate", json=body)
        waited = time.monotonic() - started
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["error"] and WAIT_S <= waited < WAIT_S + 5

    def hold_briefly() -> None:
        with live.using(None):
            time.sleep(WAIT_S / 3)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    time.sleep(0.05)
    assert client.post("/generate", json=body).status_code == 200  # waited, then served
    holder.join()


def test_bounds_and_bad_requests_are_refused(live_atlas):
    client = live_atlas[0]
    cases = [
        ({"prompt": "word " * 60, "sets": [1]}, 422, "at most 40 are taken"),
        ({"prompt": "hi", "sets": [1], "max_new_tokens": 9}, 422, "above this server's limit"),
        ({"prompt": "hi", "sets": [999]}, 404, "no set with id 999"),
        ({"prompt": "hi"}, 422, "nothing to intervene"),
        ({"prompt": "hi", "neurons": ["3-1"]}, 422, "neurons"),
        ({"prompt": "hi", "sets": [1], "model": "other"}, 404, "not loaded here"),
        ({"prompt": "hi", "sets": [1], "extra": 1}, 422, "extra"),
    ]
    for body, status, words in cases:
        got = client.post("/generate", json=body)
        assert got.status_code == status and words in got.json()["error"], (body, got.text)
    got = client.post("/activations", json={"text": "hi", "neurons": ["7/0"]})
    assert got.status_code == 422 and "outside the model" in got.json()["error"]


def test_without_a_model_the_endpoints_say_how_to_enable_them(live_atlas):
    from fastapi.testclient import TestClient

    from atlas.serve.app import create_app

    client = TestClient(create_app(live_atlas[3]))
    for path, body in (("/generate", {"prompt": "hi", "sets": [1]}),
                       ("/activations", {"text": "hi", "sets": [1]})):
        got = client.post(path, json=body)
        assert got.status_code == 404 and "atlas serve --model" in got.json()["error"]
    status = client.get("/live").json()
    assert status["models"] == [] and "atlas serve --model" in status["enable"]


def test_the_live_operations_fuzzed_with_a_model_loaded(live_atlas):
    """The schema's live operations, generated with a fixed seed against a loaded model: no
    server error, every answer and status as declared."""
    from tests.unit.serve.test_contract import fuzz_schema

    operations, failures, calls = fuzz_schema(
        str(live_atlas[0].base_url), {"GET /live", "POST /generate", "POST /activations"})
    assert not failures, "\n".join(failures[:10])
    assert len(operations) == 3 and len(calls) >= 15


def test_the_try_panel_in_a_real_browser(live_atlas, tmp_path):
    """A set opened, a prompt typed: both outputs side by side and the prompt's tokens coloured
    by the set's activation; the state is in the URL."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client = live_atlas[0]
    browser = _browser()
    try:
        browser.get(f"{client.base_url}/#model=%231&method=cgvst&row=task379&col=task379&tt=set")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: "trying set #" in b.find_element(By.ID, "try-target").text)
        prompt = browser.find_element(By.ID, "try-prompt")
        prompt.clear()
        prompt.send_keys("Is this positive or negative: I loved it")
        browser.execute_script("document.getElementById('try-factor').value = '0';")
        browser.find_element(By.ID, "try-go").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#try-intervened span"))
        assert browser.find_elements(By.CSS_SELECTOR, "#try-default span")
        acts = browser.find_elements(By.CSS_SELECTOR, "#try-acts span.t")
        assert len(acts) > 5 and "firing" in acts[0].get_attribute("title")
        assert "tp=" in browser.current_url and "tf=0" in browser.current_url
        screenshot(browser, tmp_path / "atlas-try.png")
    finally:
        browser.quit()
