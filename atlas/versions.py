"""Library versions recorded with every run."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("atlas-neurons", "torch", "transformers", "duckdb", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out
