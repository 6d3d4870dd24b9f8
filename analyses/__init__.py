"""Analyses built on the workbench: data frames (`tables`) and Plotly figures (`figures`).

Table functions turn workbench results into pandas DataFrames; figure functions
draw those frames and never recompute anything.
"""

from .figures import plot_layer_profile, write_html
from .tables import layer_table

__all__ = ["layer_table", "plot_layer_profile", "write_html"]
