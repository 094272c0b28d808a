"""The kernel backend names: what `model.kernels` may say, and what it resolves to.

- `reference`: plain `jax.numpy` with autodiff; short, readable, the oracle of the others.
- `xla_cpu`: ops with hand-written backward passes tuned for XLA:CPU (`xla_cpu/`).
- `tpu`: Pallas splash attention; the other ops as `reference`.
- `gpu`: cuDNN flash attention (XLA's attention where cuDNN cannot); the other ops as `reference`.
- `auto` (a setting only): `tpu`, `gpu` or `xla_cpu` by platform (`backend.resolve_backend`).
"""

from __future__ import annotations

from typing import Literal, get_args

KernelBackend = Literal["reference", "xla_cpu", "tpu", "gpu"]
KernelSetting = Literal["auto", "reference", "xla_cpu", "tpu", "gpu"]

KERNEL_BACKENDS: tuple[str, ...] = get_args(KernelBackend)
KERNEL_SETTINGS: tuple[str, ...] = get_args(KernelSetting)
