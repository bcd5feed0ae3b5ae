"""Experiments that reproduce the paper's results (long runs; each writes tables and figures)."""
