"""Benchmarks of the workbench, kept out of the library package (``make bench``)."""
