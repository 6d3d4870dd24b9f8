"""Reproducible experiments on the embedded model, kept out of the library package."""
