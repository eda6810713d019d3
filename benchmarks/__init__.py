"""Benchmarks of opd-selfplay side by side with its peers (TRL, plain PyTorch, Math-Verify).

Run `python -m benchmarks --quick` from the repository root; see benchmarks/README.md.
Not part of the installed library: TRL and Math-Verify are the `bench` extra, never a
dependency of `opd_selfplay`.
"""
