"""Presentation: plotly figures redrawn from stored results."""
