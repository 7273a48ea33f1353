"""Import published neuron sets saved with ``torch.save``.

- ``cgvst``: the task-neurons paper's masks, ``[[LongTensor × n_layers]]`` (one set per file).
- ``lape``: the language-neurons paper's masks, ``[language][layer] -> LongTensor`` (one set per
  language; name them with ``--task a,b,c``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError, first_line
from atlas.naming import short_task_id
from atlas.store import identity
from atlas.store import repository as repo
from atlas.tasks.sni import KNOWN_TASKS

FORMATS = ("cgvst", "lape")


def _load(path: Path) -> list:
    if not path.is_file():
        raise AtlasError(f"neuron-set file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign files
        raise AtlasError(f"cannot read {path} as a torch.save file: {first_line(err)}") from err
    if not isinstance(obj, (list, tuple)) or not obj:
        raise AtlasError(f"{path} holds {type(obj).__name__}, not a list of per-layer index lists")
    return list(obj)


def _mask(per_layer, n_layers: int, d_mlp: int, path: Path) -> torch.Tensor:
    if len(per_layer) != n_layers:
        raise AtlasError(f"{path} has {len(per_layer)} layers but --layers is {n_layers}")
    mask = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
    for layer, idx in enumerate(per_layer):
        try:
            idx = torch.as_tensor(idx)
        except (TypeError, ValueError, RuntimeError) as err:
            raise AtlasError(f"{path} layer {layer} is not a list of neuron indices "
                             f"({first_line(err)}); give integer indices per layer") from err
        if idx.numel() and (idx.dtype == torch.bool or idx.is_floating_point()
                            or idx.is_complex()):
            raise AtlasError(f"{path} layer {layer} holds {str(idx.dtype).replace('torch.', '')} "
                             "values, not integer neuron indices (a boolean mask or scores?); "
                             "give the selected indices per layer")
        idx = idx.long().flatten()
        if len(idx) and int(idx.min()) < 0:
            raise AtlasError(f"{path} layer {layer} has the negative index {int(idx.min())}; "
                             "indices run from 0")
        if len(idx) and int(idx.max()) >= d_mlp:
            raise AtlasError(f"{path} layer {layer} has index {int(idx.max())} ≥ --d-mlp {d_mlp}")
        mask[layer, idx] = True
    return mask


def import_sets(engine: Engine, path: str | Path, *, model: str, tasks: list[str], fmt: str = "cgvst",
                n_layers: int | None = None, d_mlp: int | None = None, family: str | None = None
                ) -> list[dict]:
    """Store the sets of ``path`` for ``model`` (known by name and shape, weights optional)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise AtlasError(f"unknown import format '{fmt}'; choose one of {', '.join(FORMATS)}")
    with engine.connect() as conn:
        known = identity.matching_models(conn, model)
    if len(known) > 1:
        with engine.connect() as conn:
            identity.resolve_model(conn, model)  # the error that lists the candidates
    if known:
        n_layers = n_layers or known[0]["n_layers"]
        d_mlp = d_mlp or known[0]["d_mlp"]
    obj = _load(path)
    if fmt == "cgvst" and len(obj) != 1:
        raise AtlasError(f"{path} holds {len(obj)} sets, the cgvst format one ([[indices per "
                         "layer]]); for several sets use --format lape with one --task per set")
    groups = [obj[0]] if fmt == "cgvst" else obj
    if n_layers is None:
        n_layers = len(groups[0])
    if d_mlp is None:
        raise AtlasError(f"model '{model}' is not in the atlas; give its shape with --d-mlp "
                         "(and --layers)")
    if len(tasks) != len(groups):
        raise AtlasError(f"{path} holds {len(groups)} set(s); give as many --task names "
                         f"(got {len(tasks)})")
    out = []
    with engine.begin() as conn:
        if known and (known[0]["n_layers"], known[0]["d_mlp"]) == (n_layers, d_mlp):
            model_id = known[0]["model_id"]
        else:
            model_id = repo.ensure_model(conn, model, family, n_layers, d_mlp, repo.IMPORTED, "none")
        for task, per_layer in zip(tasks, groups):
            task = KNOWN_TASKS.get(task, task)  # a paper task's id names its SNI file
            mask = _mask(per_layer, n_layers, d_mlp, path)
            task_id = repo.ensure_task(conn, task, str(path), 0, repo.IMPORTED)
            # write_set refuses to replace a stored set that evaluations refer to
            name = f"{model}/{short_task_id(task)}/{fmt}:imported"
            set_id = repo.write_set(conn, name, model_id, task_id, None, f"imported:{path.name}",
                                    mask, fmt)
            out.append({"set_id": set_id, "name": name, "size": int(mask.sum())})
    return out
