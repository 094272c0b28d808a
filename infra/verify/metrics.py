"""The numbers compared for each pair of runtimes, from log-probabilities (numpy only).

Positions: prompt position t (t >= 1) is scored by the distribution after tokens 0..t-1, so a
prompt of T tokens gives T-1 positions; the first token has nothing before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from infra.verify.tolerances import Tolerance

# {token id: (log-probability, rank)} at one prompt position, as the server returns it.
ServerEntry = Mapping[int, tuple[float, int]]


@dataclass(frozen=True)
class PairResult:
    """One row of the verify table: runtime `reference` against runtime `other`.

    `max_dlogprob`: max |log p_ref(token) - log p_other(token)| over prompt tokens (None for
    greedy rows). `mean_kl`: mean over positions of KL(ref || other) on `kl_scope` (None when no
    distribution is compared). `agreement`: fraction of positions (prompt rows) or prompts
    (greedy rows) on which both pick the same greedy token / continuation. `decisive`: the
    disagreements that are not near ties under the reference (`Tolerance.tie_gap`).
    """

    reference: str
    other: str
    kind: str  # "prompt" (teacher-forced on the prompts) or "greedy" (generated continuations)
    count: int  # positions (prompt rows) or prompts (greedy rows)
    agreement: float
    decisive: int
    tolerance: Tolerance
    max_dlogprob: float | None = None
    mean_kl: float | None = None
    kl_scope: str = ""
    failures: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """The pair as printed: `reference vs other`."""
        return f"{self.reference} vs {self.other}"

    @property
    def passed(self) -> bool:
        """True when no bound is exceeded."""
        return not self.failures


def _failures(tol: Tolerance, max_dlogprob: float | None, mean_kl: float | None,
              decisive: int) -> tuple[str, ...]:
    out = []
    if max_dlogprob is not None and not max_dlogprob <= tol.max_dlogprob:
        out.append(f"max |dlogprob| {max_dlogprob:.3g} > {tol.max_dlogprob:g}")
    if mean_kl is not None and not mean_kl <= tol.mean_kl:
        out.append(f"mean KL {mean_kl:.3g} > {tol.mean_kl:g}")
    if decisive:
        out.append(f"{decisive} greedy disagreement(s) beyond a near tie (gap > {tol.tie_gap:g})")
    return tuple(out)


def _normalised_rows(logprobs: np.ndarray) -> np.ndarray:
    rows = np.asarray(logprobs, np.float64)
    top = rows.max(-1, keepdims=True)
    return rows - (top + np.log(np.exp(rows - top).sum(-1, keepdims=True)))


def compare_full(reference: str, other: str, ref_lp: Sequence[np.ndarray],
                 other_lp: Sequence[np.ndarray], token_ids: Sequence[Sequence[int]],
                 tol: Tolerance) -> PairResult:
    """Two runtimes that both give full (T, V) log-probability rows for every prompt."""
    dlp, kl, agree, decisive = [], [], 0, 0
    for ref, oth, ids in zip(ref_lp, other_lp, token_ids, strict=True):
        # float32 log-softmax rows are normalised only to float32 precision: without
        # renormalising in float64 the KL of two near-equal rows comes out slightly negative.
        ref, oth = _normalised_rows(ref[:-1]), _normalised_rows(oth[:-1])  # (T-1, V)
        targets = np.asarray(ids[1:])
        rows = np.arange(len(targets))
        dlp.append(np.abs(ref[rows, targets] - oth[rows, targets]))
        kl.append((np.exp(ref) * (ref - oth)).sum(-1))
        ref_best, oth_best = ref.argmax(-1), oth.argmax(-1)
        agree += int((ref_best == oth_best).sum())
        gap = ref[rows, ref_best] - ref[rows, oth_best]
        decisive += int((gap > tol.tie_gap).sum())
    dlp_all, kl_all = np.concatenate(dlp), np.concatenate(kl)
    max_dlp, mean_kl = float(dlp_all.max()), float(kl_all.mean())
    return PairResult(reference, other, "prompt", len(dlp_all), agree / len(dlp_all), decisive,
                      tol, max_dlp, mean_kl, "full vocabulary",
                      _failures(tol, max_dlp, mean_kl, decisive))


def _renormalised(logprobs: np.ndarray) -> np.ndarray:
    return logprobs - np.logaddexp.reduce(logprobs)


def compare_server(reference: str, other: str, ref_lp: Sequence[np.ndarray],
                   server: Sequence[Sequence[ServerEntry | None]],
                   token_ids: Sequence[Sequence[int]], tol: Tolerance, top_k: int) -> PairResult:
    """A full-distribution reference against a server's prompt logprobs.

    The server gives, per position, the prompt token's log-probability and its `top_k` best
    candidates. KL is therefore restricted to those candidate ids S (top-k plus the prompt
    token): both distributions are renormalised on S and KL(ref_S || server_S) is taken. It is
    not the full-vocabulary KL (the API cannot give that); it is zero exactly when the two
    distributions have the same shape on S.
    """
    dlp, kl, agree, decisive = [], [], 0, 0
    for ref, entries, ids in zip(ref_lp, server, token_ids, strict=True):
        ref = np.asarray(ref, np.float64)
        if len(entries) != len(ids):
            raise ValueError(f"server scored {len(entries)} prompt positions, expected {len(ids)}")
        for t in range(1, len(ids)):
            row, entry = ref[t - 1], entries[t]
            dlp.append(abs(row[ids[t]] - entry[ids[t]][0]))
            cand = np.asarray(sorted(entry))
            server_lp = np.asarray([entry[c][0] for c in cand], np.float64)
            p, q = _renormalised(row[cand]), _renormalised(server_lp)
            kl.append(float((np.exp(p) * (p - q)).sum()))
            server_best = min(entry, key=lambda c: entry[c][1])
            ref_best = int(row.argmax())
            agree += int(server_best == ref_best)
            decisive += int(row[ref_best] - row[server_best] > tol.tie_gap)
    max_dlp, mean_kl = float(max(dlp)), float(np.mean(kl))
    return PairResult(reference, other, "prompt", len(dlp), agree / len(dlp), decisive, tol,
                      max_dlp, mean_kl, f"server top-{top_k} + prompt token, renormalised",
                      _failures(tol, max_dlp, mean_kl, decisive))


def compare_greedy(reference: str, other: str, gaps: Sequence[float | None],
                   tol: Tolerance) -> PairResult:
    """Greedy continuations of the same prompts by two runtimes.

    `gaps[i]` is None when prompt i's continuations agree, else the reference's log-prob gap
    between the two tokens at the first one where they differ (see
    `TransformersReference.divergence_gap`).
    """
    agree = sum(gap is None for gap in gaps)
    decisive = sum(gap is not None and gap > tol.tie_gap for gap in gaps)
    return PairResult(reference, other, "greedy", len(gaps), agree / len(gaps), decisive, tol,
                      failures=_failures(tol, None, None, decisive))
