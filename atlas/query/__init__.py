"""Questions asked of the atlas: overlaps, specificity, cross-model comparison, SQL, import.

Names are imported on first use, so that a quick query does not load every dependency."""

from importlib import import_module

_EXPORTS = {
    "OverlapMatrix": "overlap",
    "compare_models": "compare",
    "depth_profile": "compare",
    "export_parquet": "sql",
    "method_overlap": "overlap",
    "neuron_entropy": "overlap",
    "overlap_matrix": "overlap",
    "run_sql": "sql",
    "specificity": "overlap",
    "mantel": "compare",
    "task_similarity_agreement": "compare",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"atlas.query.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'atlas.query' has no attribute '{name}'")
