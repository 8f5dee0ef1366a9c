"""Batch runs: every preset to every model, answers graded, and the comparison report written."""
