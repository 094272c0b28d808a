"""`python -m serve`: `jaxtune serve` without the dispatcher (a serving image needs nothing
else of jaxtune)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from serve.cli import add_arguments, run
from serve.settings import ServeConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="debug logs")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return run(args)
    except ServeConfigError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
