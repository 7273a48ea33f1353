"""Trying sets live: `atlas try` (generation with and without a set, side by side) and
`atlas activations` (a set's or a neuron's activations on a text). Nothing is written."""

from __future__ import annotations

import json
import sys

import typer
from rich.table import Table
from rich.text import Text

from cli.common import DbOption, console

SetOption = typer.Option([], "--set", "-s", help="A stored set, by id (repeatable).")
NeuronOption = typer.Option([], "--neuron", "-n", help="A neuron, LAYER/NEURON (repeatable).")
ModelOption = typer.Option(..., "--model", "-m",
                           help="The sets' model (built-in name, folder or .gguf).")
DeviceOption = typer.Option("auto", help="cpu, cuda, cuda:N or auto.")
DtypeOption = typer.Option("auto", help="float32, bfloat16, float16 or auto.")
FormatOption = typer.Option("table", "--format", "-f", help="table or json.")


def _load(model: str, device: str, dtype: str, db: str):
    from atlas.models.loading import load_model
    from atlas.store import open_db

    engine = open_db(db, read_only=True, create=False)
    with console.status(f"loading {model}"):
        loaded = load_model(model, device=device, dtype=dtype)
    return engine, loaded


def try_set(
    prompt: str = typer.Argument(..., help="Your prompt."),
    model: str = ModelOption,
    set_id: list[int] = SetOption,
    neuron: list[str] = NeuronOption,
    factor: float = typer.Option(0.0, help="Scale: 0 inhibits, > 1 amplifies."),
    union: bool = typer.Option(False, help="One intervention of all the sets and neurons "
                                           "(default: one output per set)."),
    max_new_tokens: int = typer.Option(32, min=1, max=4096, help="Tokens generated at most."),
    top: int = typer.Option(5, min=1, max=50, help="Next tokens listed at each step."),
    temperature: float = typer.Option(0.0, min=0.0, help="0: greedy; above: sampled with the "
                                                         "same draws in every output."),
    seed: int = typer.Option(0, help="Seed of the draws (with --temperature)."),
    chat: bool = typer.Option(True, help="The prompt as a user turn of the model's chat "
                                         "template, when it has one."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    format: str = FormatOption,
    db: str = DbOption,
) -> None:
    """Generate from PROMPT with the model as it is and with stored sets (or neurons) scaled by
    FACTOR, side by side: each step's token and top next tokens, and where they part."""
    from atlas.intervene.trying import TryOptions, parse_neuron, try_sets

    options = TryOptions(factor=factor, union=union, max_new_tokens=max_new_tokens, top_k=top,
                         temperature=temperature, seed=seed, chat=chat)
    pairs = [parse_neuron(n) for n in neuron]
    engine, loaded = _load(model, device, dtype, db)
    try:
        answer = try_sets(engine, loaded, prompt, set_id, pairs, options)
    finally:
        engine.dispose()
    if format == "json":
        sys.stdout.write(json.dumps(answer.to_dict(), indent=1) + "\n")
        return
    _print_side_by_side(answer)


def _print_side_by_side(answer) -> None:
    res = answer.result
    model = answer.model
    console.print(f"{model.name} (revision {model.revision[:12]}, {model.dtype}, stored as "
                  f"{'#' + str(model.model_id) if model.model_id else 'no model'}); prompt "
                  f"{len(res.prompt_ids)} tokens; first tokens {res.first_token_s:.2f} s, all "
                  f"{res.seconds:.2f} s")
    for out in res.outputs:
        where = "" if out.factor is None else (
            f" × {out.factor:g}, {out.n_neurons} neurons; " +
            ("same as the default" if out.diverged_at is None else
             f"parts from the default at step {out.diverged_at}"))
        console.print(Text(f"\n{out.label}{where}", style="bold"))
        console.print(out.text)
    table = Table(title="each step: the chosen token (probability) and the top next tokens")
    table.add_column("step", justify="right")
    for out in res.outputs:
        table.add_column(out.label)
    longest = max(len(o.steps) for o in res.outputs)
    for k in range(longest):
        cells = [str(k)]
        for out in res.outputs:
            if k >= len(out.steps):
                cells.append("")
                continue
            step = out.steps[k]
            parted = out.diverged_at is not None and k >= out.diverged_at
            tops = " ".join(f"{t.token!r} {t.prob:.2f}" for t in step.top)
            cells.append(Text(f"{step.token!r} {step.prob:.2f}  | {tops}",
                              style="red" if parted else ""))
        table.add_row(*cells)
    console.print(table)


def activations(
    text: str = typer.Argument(..., help="The text."),
    model: str = ModelOption,
    set_id: list[int] = SetOption,
    neuron: list[str] = NeuronOption,
    top: int = typer.Option(5, min=1, max=50, help="Neurons listed per token."),
    chat: bool = typer.Option(False, help="Render the text as a user turn of the chat "
                                          "template first."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    format: str = FormatOption,
    db: str = DbOption,
) -> None:
    """The activations of stored sets' neurons (or single neurons) on every token of TEXT: how
    many fire and how strongly, and the most active neurons per token."""
    from atlas.intervene.trying import parse_neuron, set_activations

    pairs = [parse_neuron(n) for n in neuron]
    engine, loaded = _load(model, device, dtype, db)
    try:
        answer = set_activations(engine, loaded, text, set_id, pairs, chat)
    finally:
        engine.dispose()
    if format == "json":
        sys.stdout.write(json.dumps(answer.to_dict(top), indent=1) + "\n")
        return
    acts = answer.activations
    console.print(f"{len(acts.neurons)} neurons on {len(acts.tokens)} tokens "
                  f"({acts.seconds:.2f} s)")
    table = Table()
    for name in ("pos", "token", "firing", "mean", "max |a|", f"top {top}"):
        table.add_column(name, justify="left" if name in ("token", f"top {top}") else "right")
    for p, t in enumerate(acts.per_token(top)):
        table.add_row(str(p), repr(t.token), f"{t.n_firing}/{len(acts.neurons)}", f"{t.mean:.4f}",
                      f"{t.max_abs:.4f}",
                      " ".join(f"{v.layer}/{v.neuron}:{v.value:.3f}" for v in t.top))
    console.print(table)

