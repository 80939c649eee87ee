"""Data: recipes that normalize competition files, CPC titles, and batching."""
