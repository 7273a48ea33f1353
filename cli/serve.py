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
                                              "lets concurrent requests share the cores.")
          ) -> None:
    """Serve the atlas read-only over HTTP (JSON, CSV, Parquet; OpenAPI docs at /docs)."""
    import uvicorn

    from atlas.serve.app import create_app
    from atlas.store.db import db_path

    path = db_path(db)
    if not path.exists():
        raise AtlasError(f"no atlas database at {path}; run `atlas ingest` first or pass --db")
    _check_port(host, port)
    console.print(f"serving {path} read-only on http://{host}:{port} (docs: /docs), "
                  f"{workers} worker(s)")
    if workers == 1:
        uvicorn.run(create_app(path, sql_timeout_s=sql_timeout, sql_max_rows=sql_max_rows,
                               threads=threads or None), host=host, port=port,
                    log_level="warning")
        return
    os.environ.update({"ATLAS_SERVE_DB": str(path.resolve()),
                       "ATLAS_SERVE_SQL_TIMEOUT": str(sql_timeout),
                       "ATLAS_SERVE_SQL_MAX_ROWS": str(sql_max_rows),
                       "ATLAS_SERVE_THREADS": str(threads)})
    uvicorn.run("atlas.serve.app:app_from_env", factory=True, workers=workers, host=host,
                port=port, log_level="warning")
