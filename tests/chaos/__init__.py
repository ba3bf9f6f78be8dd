"""Fault injection against real processes: see run.py. `python -m tests.chaos --cycles N` runs it by hand."""
