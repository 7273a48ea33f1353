"""`atlas serve`: the read-only HTTP API of one atlas database."""

from __future__ import annotations

import os

import typer

from atlas.errors import AtlasError
from cli.common import DbOption, console


def _check_port(host: str, port: int) -> None:
    """Refuse, before anything is printed, an address this process cannot bind."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise AtlasError(f"cannot serve on {host}:{port} ({err.strerror or err}); choose another "
                         "--port or --host") from err


def _live_models(specs: list[str], device: str, dtype: str, max_new_tokens: int,
                 max_prompt_tokens: int, wait: float):
    from atlas.serve.live import LiveLimits, LiveModels

    loaded = []
    if specs:
        from atlas.models.loading import load_model

        for spec in specs:
            with console.status(f"loading {spec}"):
                loaded.append(load_model(spec, device=device, dtype=dtype))
    return LiveModels(loaded, LiveLimits(max_new_tokens, max_prompt_tokens, wait))


def serve(db: str = DbOption,
          host: str = typer.Option("127.0.0.1", help="Address to bind (loopback unless given)."),
          port: int = typer.Option(8000, min=1, max=65535, help="Port."),
          sql_timeout: float = typer.Option(10.0, min=0.001, help="Seconds a POST /sql query may "
                                                                  "run."),
          sql_max_rows: int = typer.Option(10_000, min=1, help="Rows a POST /sql answer holds at "
                                                               "most."),
          workers: int = typer.Option(1, min=1, help="Server processes; each keeps its own memory "
                                                     "(1 serves 2 cores best)."),
          threads: int = typer.Option(1, min=0, help="DuckDB threads per query (0: one per core); 1 "
                                              "lets concurrent requests share the cores."),
          linger: float = typer.Option(0.25, min=0.0, help="Seconds the file stays open after "
                                       "the last request (a waiting writer gets it at once); "
                                       "an open file keeps DuckDB's caches warm under load."),
          model: list[str] = typer.Option([], "--model", "-m", help="Load a model to try its sets "
                                          "live (POST /generate, /activations; repeatable)."),
          device: str = typer.Option("auto", help="With --model: cpu, cuda, cuda:N or auto."),
          dtype: str = typer.Option("auto", help="With --model: float32, bfloat16, float16 or "
                                                 "auto."),
          max_new_tokens: int = typer.Option(64, min=1, max=4096, help="With --model: tokens a "
                                                                      "generation may ask for."),
          max_prompt_tokens: int = typer.Option(512, min=1, help="With --model: longest prompt."),
          wait: float = typer.Option(5.0, min=0.0, help="With --model: seconds a request waits "
                                                        "for a busy model before a 429."),
          ) -> None:
    """Serve the atlas read-only over HTTP (JSON, CSV, Parquet; OpenAPI docs at /docs); with
    --model, also try its sets live on your own text."""
    import uvicorn

    from atlas.serve.app import create_app
    from atlas.store.db import db_path

    path = db_path(db)
    if not path.exists():
        raise AtlasError(f"no atlas database at {path}; run `atlas ingest` first or pass --db")
    if model and workers != 1:
        raise AtlasError("--model serves from one process; leave --workers at 1")
    _check_port(host, port)
    live = _live_models(model, device, dtype, max_new_tokens, max_prompt_tokens, wait)
    console.print(f"serving {path} read-only on http://{host}:{port} (docs: /docs), "
                  f"{workers} worker(s)" + (f"; live: {', '.join(live.names)}" if model else ""))
    if workers == 1:
        uvicorn.run(create_app(path, sql_timeout_s=sql_timeout, sql_max_rows=sql_max_rows,
                               threads=threads or None, live=live, linger_s=linger),
                    host=host, port=port,
                    log_level="warning")
        return
    os.environ.update({"ATLAS_SERVE_DB": str(path.resolve()),
                       "ATLAS_SERVE_SQL_TIMEOUT": str(sql_timeout),
                       "ATLAS_SERVE_SQL_MAX_ROWS": str(sql_max_rows),
                       "ATLAS_SERVE_THREADS": str(threads), "ATLAS_SERVE_LINGER": str(linger)})
    uvicorn.run("atlas.serve.app:app_from_env", factory=True, workers=workers, host=host,
                port=port, log_level="warning")
