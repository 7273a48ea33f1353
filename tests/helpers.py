"""What the tests share: the shared data's paths, tiny random models of several families, a
locally trained tokenizer, a tiny ingested atlas, and a read-only query of a database file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT_DIR = Path(__file__).resolve().parents[1]  # the repository
SHARED = ROOT_DIR.parent / "shared" / "data"
SNI_DIR = SHARED / "sni"
PUBLISHED_DIR = SHARED / "published" / "cgvst-llama2-7b-chat"

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
VOCAB = 600


def query(db, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the database file ``db``, read-only."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# The tokenizer's training files: a fixed list, so that tests do not depend on what else the
# shared folder holds.
CORPUS_FILES = [
    "task1645_medical_question_pair_dataset_text_classification.json",
    "task190_snli_classification.json",
    "task195_sentiment140_classification.json",
    "task227_clariq_classification.json",
    "task274_overruling_legal_classification.json",
    "task379_agnews_topic_classification.json",
    "task391_causal_relationship.json",
    "task512_twitter_emotion_classification.json",
    "task566_circa_classification.json",
]


def _corpus() -> list[str]:
    texts = []
    for path in (SNI_DIR / name for name in CORPUS_FILES):
        data = json.loads(path.read_text(encoding="utf-8"))
        texts.append(data["Definition"][0])
        texts += [x["input"] + " " + x["output"][0] for x in data["Instances"][:60]]
    return texts


def build_tokenizer(chat_template: str | None = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = chat_template
    return fast


def tiny_config(family: str, vocab: int = VOCAB):
    import transformers as tf

    common = dict(vocab_size=vocab, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=2048)
    if family == "llama":
        return tf.LlamaConfig(hidden_size=32, intermediate_size=48, num_key_value_heads=2, **common)
    if family == "mistral":
        return tf.MistralConfig(hidden_size=32, intermediate_size=48, num_key_value_heads=2, **common)
    if family == "qwen2":
        return tf.Qwen2Config(hidden_size=32, intermediate_size=48, num_key_value_heads=2, **common)
    if family == "qwen3":
        return tf.Qwen3Config(hidden_size=32, intermediate_size=48, num_key_value_heads=2,
                              head_dim=8, **common)
    if family == "gemma":
        return tf.GemmaConfig(hidden_size=32, intermediate_size=48, num_key_value_heads=2,
                              head_dim=8, **common)
    if family == "gemma2":
        return tf.Gemma2Config(hidden_size=32, intermediate_size=48, num_key_value_heads=2,
                               head_dim=8, **common)
    if family == "gemma3_text":
        return tf.Gemma3TextConfig(hidden_size=32, intermediate_size=48, num_key_value_heads=2,
                                   head_dim=8, **common)
    if family == "phi3":
        return tf.Phi3Config(hidden_size=32, intermediate_size=48, num_key_value_heads=4,
                             pad_token_id=0, **common)
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_layer=2, n_head=4, n_embd=32, n_inner=48,
                             n_positions=2048)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(hidden_size=32, intermediate_size=48, **common)
    raise ValueError(family)


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2",
            "gpt_neox"]


def tiny_model(family: str, seed: int = 0, vocab: int = VOCAB):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(family, vocab)
    cfg.attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg)
    # Random norm gains and biases: with LayerNorm's default β = 0, Σ_j x[t, j] is 0 and
    # up-weight gradient sums would be rounding noise.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name or "layernorm" in name:
                param.add_(torch.randn_like(param) * 0.5)
    model.eval()
    return model


def save_tiny(family: str, folder: Path, chat_template: str | None = CHATML) -> Path:
    """A tiny random model and the local tokenizer saved as a plain HF folder."""
    model = tiny_model(family)
    tok = build_tokenizer(chat_template)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def ingested_tiny(tmp_path: Path, tasks=("task379", "task195"), family: str = "llama",
                  extra: tuple[str, ...] = ()) -> tuple[Path, Path, list[str]]:
    """A tiny random model saved under ``tmp_path``, ingested (cgvst, 4 examples, 1 shot) on
    ``tasks`` into ``tmp_path/a.duckdb``: (model folder, database, the CLI options both used)."""
    from typer.testing import CliRunner

    from cli.main import app

    folder = save_tiny(family, tmp_path / "tiny")
    db = tmp_path / "a.duckdb"
    # float32 pinned: "auto" is bfloat16 on a CPU with native bfloat16, float32 elsewhere
    common = ["--model", str(folder), "--sni-dir", str(SNI_DIR), "--db", str(db), "--shots", "1",
              "--dtype", "float32"]
    task_args = [arg for task in tasks for arg in ("--task", task)]
    res = CliRunner().invoke(app, ["ingest", *common, "--examples", "4", *task_args, *extra])
    assert res.exit_code == 0, res.output
    return folder, db, common


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(app) -> Iterator[str]:
    """``app`` on a real uvicorn server on 127.0.0.1 in a thread: its base URL."""
    import threading
    import time

    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(5)
