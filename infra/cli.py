"""The `jaxtune` console script: a thin argparse dispatcher.

Each subcommand is implemented in the package that owns it and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Handlers are imported lazily so
that ``jaxtune serve`` works in an image without JAX and ``jaxtune train`` in one
without vLLM.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# (command path, module implementing it, one-line help)
COMMANDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("model", "fetch"), "train_jax.convert.fetch_cli", "obtain a known base model offline"),
    (("model", "import"), "train_jax.convert.import_cli", "HF folder -> jaxtune checkpoint"),
    (("model", "check"), "train_jax.convert.check_cli", "Flax vs transformers logit parity"),
    (("export",), "train_jax.convert.export_cli", "jaxtune checkpoint -> HF folder"),
    (("verify",), "infra.verify.cli", "Flax vs transformers vs served model on fixed prompts"),
    (("data", "prepare"), "train_jax.data.cli", "clean, tokenise, mask and pack a dataset"),
    (("train",), "infra.train_cli", "fine-tune a model from a YAML config"),
    (("plan",), "train_jax.train.plan_cli", "print the sharding plan and memory per device"),
    (("serve",), "serve.cli", "OpenAI-compatible server on vLLM"),
    (("eval", "accuracy"), "eval.cli_accuracy", "task accuracy against an endpoint"),
    (("eval", "latency"), "eval.cli_latency", "latency under load against an endpoint"),
    (("eval", "compare"), "eval.cli_compare", "compare accuracy runs (McNemar, plots)"),
    (("launch", "tpu"), "infra.launch.tpu_cli", "run training on a Cloud TPU VM"),
    (("launch", "gke"), "infra.launch.gke_cli", "render a GKE JobSet for TPU or GPU"),
    (("launch", "gke-serve"), "infra.launch.gke_serve_cli",
     "render a GKE Deployment + Service serving a tuned model on GPUs"),
    (("sweep",), "infra.sweep.cli", "hyperparameter grid search"),
    (("demo",), "infra.demo.cli", "base model -> tuned, served, evaluated specialist"),
)


class CommandError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def _selected_command(argv: Sequence[str]) -> tuple[str, ...] | None:
    """The command path named on the command line, found before parsing."""
    words = [arg for arg in argv if not arg.startswith("-")]
    for path, _, _ in COMMANDS:
        if tuple(words[: len(path)]) == path:
            return path
    return None


def _build_parser(selected: tuple[str, ...] | None) -> argparse.ArgumentParser:
    # Only the selected subcommand's module is imported: `jaxtune serve` must not pay for JAX
    # (or need it installed), nor `jaxtune train` for vLLM.
    parser = argparse.ArgumentParser(prog="jaxtune", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="info-level logging")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module, help_text in COMMANDS:
        if len(path) == 1:
            sub = top.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                group_parser = top.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = group_parser.add_subparsers(
                    dest=f"{path[0]}_command", required=True, metavar="SUBCOMMAND"
                )
            sub = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks and debug logs")
        if path != selected:
            continue
        try:
            importlib.import_module(module).add_arguments(sub)
        except ImportError as exc:
            # A subcommand whose implementation (or its extra) is not installed stays listed,
            # and says why when it is run.
            sub.set_defaults(_missing=str(exc))
            sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `jaxtune` console script."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(_selected_command(argv))
    args = parser.parse_args(argv)
    # The process is the command's own (not a caller's, e.g. a test's): it may re-execute.
    args._whole_process = from_command_line
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if getattr(args, "_missing", None):
        print(f"jaxtune: error: this command is unavailable: {args._missing}", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("jaxtune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI boundary turns errors into one line
        if args.debug:
            raise
        name = type(exc).__name__
        print(f"jaxtune: error: {exc}" if _is_user_error(exc) else f"jaxtune: error: {name}: {exc}",
              file=sys.stderr)
        return 1


def _is_user_error(exc: Exception) -> bool:
    # Errors the user can act on carry their own message; others keep the exception name.
    return isinstance(exc, (CommandError, FileNotFoundError, ValueError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
