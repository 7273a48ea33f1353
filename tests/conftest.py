"""Fixtures: the session's tokenizer, and every test in its own ATLAS_HOME, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import build_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "atlas_home"
    if "ATLAS_HOME_FOR_TESTS" in os.environ:
        home = Path(os.environ["ATLAS_HOME_FOR_TESTS"])
    monkeypatch.setenv("ATLAS_HOME", str(home))
    monkeypatch.setenv("ATLAS_OFFLINE", "1")
    monkeypatch.delenv("ATLAS_SNI_DIR", raising=False)
    monkeypatch.delenv("ATLAS_DB", raising=False)
