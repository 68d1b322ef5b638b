"""The reproducibility table: every published number we put beside ours, each with the run
that reproduces it at its own budget (or a stated fraction), resumable, and a generator that
writes the table of docs/reproducing.md from the results files. See
``python -m benchmarks.reproduce``."""
