"""srstudy.analysis: reading study results (Pareto front, plots, notebooks)."""
