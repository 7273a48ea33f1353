"""atlas: a database-backed atlas of task-specific neurons in language models."""

from atlas.errors import AtlasError

__version__ = "0.1.0"
__all__ = ["AtlasError", "__version__"]
