"""Evidence commands: describe (record what neurons respond to and write), neurons (find
neurons from a token, or list a set's neurons by specificity)."""

from __future__ import annotations

import json
import sys

import typer

from cli.common import DbOption, SniDirOption, console, rich_table, sni_path


def describe(
    model: str = typer.Option(..., "--model", "-m", help="Model (built-in name, folder or .gguf)."),
    task: list[str] = typer.Option(..., "--task", "-t", help="Task name or file (repeatable)."),
    examples: int = typer.Option(20, help="Texts per task, from the scoring half."),
    shots: int = typer.Option(0, help="Demonstrations per text (0: each instance alone)."),
    k: int = typer.Option(8, "--k", help="Exemplars kept per neuron and sign."),
    before: int = typer.Option(8, help="Window tokens before the peak."),
    after: int = typer.Option(4, help="Window tokens after the peak."),
    samples: int = typer.Option(64, help="Token positions sampled for quantile bins."),
    hist_tokens: int = typer.Option(2048, help="Token positions per task the histogram counts "
                                               "(seeded; 0: every one)."),
    seed: int = typer.Option(0, help="Seed of the texts and the sampled positions."),
    batch_size: int = typer.Option(8, help="Texts per batch."),
    set_id: list[int] = typer.Option([], "--set", help="Keep only the neurons of these stored "
                                     "sets (by id; repeatable)."),
    sets_of: list[str] = typer.Option([], "--sets-of", help="Keep only the neurons of the "
                                      "model's current sets of this method (repeatable)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("auto", help="float32, bfloat16, float16 or auto."),
    sni_dir: list[str] = SniDirOption,
    db: str = DbOption,
) -> None:
    """Record what every neuron of MODEL (or of stored sets: --set, --sets-of) responds to (top
    contexts of both signs, quantile samples, density per task) on the tasks' texts, and what
    every neuron writes (promoted and suppressed tokens); stored as one evidence run."""
    from atlas.evidence import DescribeOptions
    from atlas.evidence import describe as run_describe
    from atlas.models.loading import load_model
    from atlas.store import open_db
    from atlas.tasks.sni import expand_task_names, load_task

    options = DescribeOptions(examples=examples, shots=shots, k=k, before=before, after=after,
                              n_samples=samples, hist_tokens=hist_tokens, seed=seed, batch_size=batch_size,
                              set_ids=sorted(set(set_id)), sets_of=sorted(set(sets_of)),
                              sni_dir=sni_path(sni_dir))
    tasks = [load_task(name, options.sni_dir) for name in expand_task_names(task)]
    engine = open_db(db)
    try:
        with console.status(f"loading {model}"):
            loaded = load_model(model, device=device, dtype=dtype)
        result = run_describe(engine, loaded, tasks, options, console.print)
    finally:
        engine.dispose()
    console.print(f"evidence run {result.evidence_id} ({result.status}): {result.n_sequences} "
                  f"texts, {result.n_tokens} tokens read, {result.seconds:.1f} s")


def neurons(
    model: str = typer.Option(..., "--model", "-m", help="Model name as stored."),
    token: str = typer.Option(None, "--token", help="Neurons whose exemplars peak on this token."),
    set_id: int = typer.Option(None, "--set", help="A stored set's neurons (by id) with a "
                                                   "summary each (see --order)."),
    layer: int = typer.Option(None, "--layer", help="With --neuron: one neuron's evidence."),
    neuron: int = typer.Option(None, "--neuron"),
    negative: bool = typer.Option(False, help="With --token: the most negative activations."),
    order: str = typer.Option("specificity", help="With --set: specificity (score in the set's "
                                                  "task against its others) or score."),
    limit: int = typer.Option(20, min=1, max=10000, help="How many neurons."),
    format: str = typer.Option("table", "--format", "-f", help="table or json."),
    db: str = DbOption,
) -> None:
    """Find neurons from text (--token), list a set's neurons by specificity (--set), or show
    one neuron's evidence (--layer and --neuron)."""
    from atlas.query import evidence as ev
    from atlas.store.db import open_db

    chosen = [token is not None, set_id is not None, layer is not None or neuron is not None]
    if sum(chosen) != 1 or (chosen[2] and (layer is None or neuron is None)):
        raise typer.BadParameter("give one of --token, --set, or --layer with --neuron")
    engine = open_db(db, read_only=True, create=False)
    try:
        if chosen[2]:
            data = ev.neuron_evidence(engine, model, layer, neuron).as_dict()
            sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")
            return
        found = (ev.neurons_for_token(engine, model, token, limit, -1 if negative else 1)
                 if token is not None else ev.set_neurons(engine, set_id, limit, order))
    finally:
        engine.dispose()
    if format == "json":
        sys.stdout.write(json.dumps(found, indent=1, default=str) + "\n")
    else:
        console.print(rich_table(found, title=f"neurons of {model}"))
