"""Load tasks: Super-NaturalInstructions JSON files, or any file ``datasets`` reads.

An SNI task is named by its file name without ``.json`` or by its id alone (``task379``). Folders
searched, in order: ``--sni-dir``, ``$ATLAS_SNI_DIR``, and the download cache
``$ATLAS_HOME/sni`` (filled from the public repository when online and the name is known).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from atlas.errors import AtlasError, first_line
from atlas.naming import short_task_id
from atlas.paths import atlas_home

SNI_RAW_URL = "https://raw.githubusercontent.com/allenai/natural-instructions/master/tasks/{}.json"

# Full file names of the paper's tasks, so that an id alone can be fetched when online.
KNOWN_TASKS = {
    "task075": "task075_squad1.1_answer_generation",
    "task1645": "task1645_medical_question_pair_dataset_text_classification",
    "task190": "task190_snli_classification",
    "task195": "task195_sentiment140_classification",
    "task227": "task227_clariq_classification",
    "task274": "task274_overruling_legal_classification",
    "task379": "task379_agnews_topic_classification",
    "task391": "task391_causal_relationship",
    "task512": "task512_twitter_emotion_classification",
    "task566": "task566_circa_classification",
}
# The eight tasks whose CGVST neuron sets the paper released.
PAPER_TASKS = ["task075", "task1645", "task195", "task274", "task379", "task391", "task512", "task566"]
MAX_CLASSES = 20


@dataclass(frozen=True)
class Instance:
    id: str
    input: str
    outputs: tuple[str, ...]

    @property
    def output(self) -> str:
        """The first gold output ("" for an instance without one, kept only as released)."""
        return self.outputs[0] if self.outputs else ""


@dataclass
class Task:
    name: str
    definition: str
    instances: list[Instance]
    source: str
    data_hash: str = field(default="")  # of the instances as read (what a run's params keep)
    # of the file's default reading, which the atlas's tasks table keeps: the same file read by
    # the released rules is still the same task
    stored_hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.stored_hash:
            self.stored_hash = self.data_hash

    @property
    def n_instances(self) -> int:
        return len(self.instances)

    @property
    def short_name(self) -> str:
        return short_task_id(self.name)

    @property
    def labels(self) -> list[str] | None:
        """The label set of a classification task (few distinct outputs), else None."""
        distinct = sorted({inst.output for inst in self.instances})
        if len(distinct) <= min(MAX_CLASSES, max(2, len(self.instances) // 4)):
            return distinct
        return None


def _hash_instances(definition: str, instances: list[Instance]) -> str:
    payload = json.dumps(
        [definition, [[i.id, i.input, list(i.outputs)] for i in instances]], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _make_task(name: str, definition: str, instances: list[Instance], source: str) -> Task:
    if not instances:
        raise AtlasError(f"task '{name}' ({source}) has no instances; give a file with instances")
    return Task(name, definition, instances, source, _hash_instances(definition, instances))


def load_sni_file(path: Path, released: bool = False) -> Task:
    """Parse one SNI task file (keys ``Definition`` and ``Instances``). By default the first
    Definition part is the definition and instances without an output are dropped;
    ``released`` reads as the released code does: every Definition part joined, every instance
    kept (an empty output list answers "")."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        definition, instances = _read_sni(data, released)
        stored = _hash_instances(*_read_sni(data, False)) if released else ""
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AtlasError(f"task file {path} is not valid JSON ({err}); fix or replace it") from err
    except (KeyError, TypeError) as err:
        raise AtlasError(
            f"task file {path} lacks the SNI field {err}; it needs Definition and Instances "
            "with id, input and output"
        ) from err
    task = _make_task(path.stem, definition, instances, str(path))
    return replace(task, stored_hash=stored) if stored else task


def _read_sni(data: dict, released: bool) -> tuple[str, list[Instance]]:
    """(definition, instances) of a parsed SNI file by the default or the released rules."""
    parts = data["Definition"]
    parts = [str(p) for p in parts] if isinstance(parts, list) else [str(parts)]
    definition = "".join(parts) if released else (parts[0] if parts else "")
    instances = [Instance(str(x["id"]), str(x["input"]), tuple(str(o) for o in x["output"]))
                 for x in data["Instances"] if released or x.get("output")]
    return definition, instances


def load_table_file(path: Path, definition: str = "") -> Task:
    """Load a jsonl/csv/parquet/json table with ``input`` and ``output`` columns via datasets."""
    import datasets

    kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[path.suffix]
    if path.stat().st_size == 0:
        raise AtlasError(f"task file {path} is empty; give a file with input and output rows")
    try:
        table = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many types for unreadable files
        raise AtlasError(f"cannot read task file {path}: {first_line(err)}") from err
    missing = {"input", "output"} - set(table.column_names)
    if missing:
        raise AtlasError(f"task file {path} lacks column(s) {sorted(missing)}; add them")
    if "definition" in table.column_names and not definition:
        definition = str(table[0]["definition"])
    instances = []
    for k, row in enumerate(table):
        outputs = row["output"] if isinstance(row["output"], list) else [row["output"]]
        instances.append(Instance(str(row.get("id", k)), str(row["input"]), tuple(map(str, outputs))))
    return _make_task(path.stem, definition, instances, str(path))


def search_dirs(sni_dir: str | Path | list | None = None) -> list[Path]:
    """Folders searched for tasks, in order: ``sni_dir`` (one folder, several joined with the
    path separator, or a list), ``$ATLAS_SNI_DIR`` (likewise), the download cache."""
    given = [] if not sni_dir else [sni_dir] if isinstance(sni_dir, (str, Path)) else list(sni_dir)
    given.append(os.environ.get("ATLAS_SNI_DIR", ""))
    dirs = [Path(part) for entry in given for part in str(entry).split(os.pathsep) if part]
    return [*dirs, atlas_home() / "sni"]


def _find_in(folder: Path, name: str) -> Path | None:
    if not folder.is_dir():
        return None
    exact = folder / f"{name}.json"
    if exact.is_file():
        return exact
    if re.fullmatch(r"task\d+", name):
        matches = sorted(folder.glob(f"{name}_*.json"))
        if matches:
            return matches[0]
    return None


def _download(name: str, cache: Path) -> Path | None:
    if os.environ.get("ATLAS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE"):
        return None
    full = KNOWN_TASKS.get(name, name if "_" in name else None)
    if full is None:
        return None
    try:
        with urllib.request.urlopen(SNI_RAW_URL.format(full), timeout=15) as resp:
            body = resp.read()
    except OSError:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{full}.json"
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{full}.", suffix=".part")  # unique per process
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
    os.replace(tmp, target)
    return target


def load_task(name: str, sni_dir: str | Path | list | None = None, released: bool = False) -> Task:
    """Load a task by SNI name or id, or from a path to a task file; ``released``: an SNI file
    read by the released code's rules (see :func:`load_sni_file`)."""
    path = Path(name).expanduser()
    if path.suffix in {".jsonl", ".csv", ".parquet"} or (path.suffix == ".json" and path.exists()):
        if not path.is_file():
            raise AtlasError(f"task file not found: {path}")
        if path.suffix == ".json" and path.read_text(encoding="utf-8", errors="replace").lstrip()[:1] != "[":
            return load_sni_file(path, released)
        return load_table_file(path)
    dirs = search_dirs(sni_dir)
    for folder in dirs:
        found = _find_in(folder, name)
        if found:
            return load_sni_file(found, released)
    downloaded = _download(name, dirs[-1])
    if downloaded:
        return load_sni_file(downloaded, released)
    looked = ", ".join(str(d) for d in dirs)
    raise AtlasError(
        f"task '{name}' not found (looked in: {looked}; no download); "
        "point --sni-dir or ATLAS_SNI_DIR at an SNI tasks/ folder"
    )


def expand_task_names(names: list[str]) -> list[str]:
    """Expand presets: ``paper`` is the eight tasks of the paper's released neuron sets."""
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            out.extend(PAPER_TASKS if part == "paper" else [part])
    return list(dict.fromkeys(out))
