"""How far two runtimes may disagree on the same prompts, per weight dtype of the export.

`local` bounds Flax vs transformers: both compute in float32 on the same values (the Flax side
rounds the checkpoint's weights to the export's dtype first), so every dtype shares float32's
bound and a conversion error stands out from rounding. `server` bounds vLLM (computing in the export's dtype) vs
transformers in float32. The numbers and how they were measured are in docs/SERVING.md
("Verifying an export").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Bounds for one pair of runtimes.

    `max_dlogprob`: largest |log p_a(token) - log p_b(token)| over the prompts' tokens.
    `mean_kl`: largest mean KL(a || b) per position (full vocabulary, or the server's top-k).
    `tie_gap`: a disagreement on the greedy token counts only when the reference prefers its
    token over the other's by more than this log-prob gap (otherwise it is a near tie).
    """

    max_dlogprob: float
    mean_kl: float
    tie_gap: float


TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "float32": {
        "local": Tolerance(max_dlogprob=1e-3, mean_kl=1e-6, tie_gap=1e-2),
        "server": Tolerance(max_dlogprob=1e-2, mean_kl=1e-5, tie_gap=2e-2),
    },
    "bfloat16": {
        "local": Tolerance(max_dlogprob=1e-3, mean_kl=1e-6, tie_gap=1e-2),
        "server": Tolerance(max_dlogprob=0.5, mean_kl=2e-2, tie_gap=1.0),
    },
}
# float16 has more mantissa than bfloat16: bfloat16's bounds are the conservative choice.
TOLERANCES["float16"] = TOLERANCES["bfloat16"]


def tolerances_for(dtype: str) -> dict[str, Tolerance]:
    """The `local` and `server` tolerances for an export whose weights are `dtype`."""
    try:
        return TOLERANCES[dtype]
    except KeyError:
        raise ValueError(f"no verify tolerances for weight dtype {dtype!r}; "
                         f"known: {', '.join(sorted(TOLERANCES))}") from None
