"""Synthetic data generators, toy model configs and the shared toy trainer (see the toy-task issues)."""
