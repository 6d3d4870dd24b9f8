"""Analyses built on the workbench: each one a data function and a drawing function.

Data functions return DataFrames (or frozen dataclasses of them); drawing functions take
exactly those objects and return Plotly figures, never recomputing anything. Every
figure shows inline in Jupyter and saves offline with `write_html`; `report` writes one
page with the figures for a vector and its sweep table.

| analysis | data | drawing |
| --- | --- | --- |
| layer sweep | `layer_sweep`, `accuracy_grid` | `plot_layer_sweep`, `plot_accuracy_heatmap` |
| vector geometry | `cosine_table`, `layer_cosine_table`, `residual_norms` + `relative_norm_table` | `plot_cosine_heatmap`, `plot_layer_cosines`, `plot_relative_norms` |
| projections | `projections`, `difference_pca` | `plot_projections`, `plot_difference_pca` |
| token-level view | `token_projections` | `plot_token_projections` |
| composition | `joint_responses` → `composition_table`, `interference_table` | `plot_composition`, `plot_interference` |
| stability | `workbench.stability_curve` | `plot_stability` |
| per-layer profile | `layer_table` | `plot_layer_profile` |
"""

from .composition import composition_table, interference_table, joint_responses, pair_cosines
from .composition_figures import plot_composition, plot_interference
from .figures import plot_layer_profile
from .geometry import cosine_table, layer_cosine_table, relative_norm_table, residual_norms
from .geometry_figures import plot_cosine_heatmap, plot_layer_cosines, plot_relative_norms
from .projection_figures import plot_difference_pca, plot_projections, plot_token_projections
from .projections import Projections, difference_pca, projections
from .report import report
from .style import instruction_colour, vector_label, write_html
from .sweep_figures import plot_accuracy_heatmap, plot_layer_sweep, plot_stability
from .sweep_views import LayerSweep, accuracy_grid, layer_sweep
from .tables import layer_table
from .tokens import token_projections

__all__ = [
    "LayerSweep",
    "Projections",
    "accuracy_grid",
    "composition_table",
    "cosine_table",
    "difference_pca",
    "instruction_colour",
    "interference_table",
    "joint_responses",
    "layer_cosine_table",
    "layer_sweep",
    "layer_table",
    "pair_cosines",
    "plot_accuracy_heatmap",
    "plot_composition",
    "plot_cosine_heatmap",
    "plot_difference_pca",
    "plot_interference",
    "plot_layer_cosines",
    "plot_layer_profile",
    "plot_layer_sweep",
    "plot_projections",
    "plot_relative_norms",
    "plot_stability",
    "plot_token_projections",
    "projections",
    "report",
    "residual_norms",
    "relative_norm_table",
    "token_projections",
    "vector_label",
    "write_html",
]
