"""Ops with hand-written backward passes, tuned for XLA:CPU (the `xla_cpu` kernel backend).

Each module says why its op is written by hand, with a pointer to the measurement in
docs/BENCHMARKS.md#training; tests check each against `kernels.reference`.
"""
