"""The answer shape of the SQL task for constrained decoding: one SELECT statement.

A regex rather than a full SQL grammar: the output starts with ``SELECT``, stays on one line
and holds no ``;`` outside quoted literals (so it is a single statement), and quoted literals
and identifiers are closed. Whether the query is right is the scorer's business.
"""

from __future__ import annotations

# Any character but a quote, ';' or a line break; or a closed '...' / "..." literal.
_PIECE = r"""([^;\n'"]|'[^'\n]*'|"[^"\n]*")"""
SELECT_REGEX = "SELECT " + _PIECE + "+"


def sql_output_grammar() -> dict[str, str]:
    """The ``structured_outputs`` payload of the SQL task: a single SELECT statement."""
    return {"regex": SELECT_REGEX}
