"""Questions asked of the atlas: overlaps, specificity, cross-model comparison, SQL, import."""

from atlas.query.compare import compare_models, depth_profile
from atlas.query.importer import import_sets
from atlas.query.overlap import OverlapMatrix, neuron_entropy, overlap_matrix, specificity
from atlas.query.sql import export_parquet, run_sql

__all__ = [
    "OverlapMatrix",
    "compare_models",
    "depth_profile",
    "export_parquet",
    "import_sets",
    "neuron_entropy",
    "overlap_matrix",
    "run_sql",
    "specificity",
]
