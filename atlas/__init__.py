"""atlas: a database-backed atlas of task-specific neurons in language models.

``atlas.open(path)`` opens an atlas read-only for questions from Python (:mod:`atlas.api`)."""

from atlas.errors import AtlasError

__version__ = "0.1.0"
__all__ = ["Atlas", "AtlasError", "__version__", "open"]


def __getattr__(name: str):
    if name in ("open", "Atlas"):  # imported on first use: `import atlas` stays light
        from atlas import api

        return getattr(api, name)
    raise AttributeError(f"module 'atlas' has no attribute '{name}'")
