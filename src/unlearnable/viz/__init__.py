"""Figures: image grids and plots (matplotlib, Agg backend; PNG written atomically)."""
