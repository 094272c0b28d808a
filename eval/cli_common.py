"""Flags shared by the `jaxtune eval` subcommands that talk to a server."""

from __future__ import annotations

import argparse
import logging
import os

from eval.client import ClientConfig

API_KEY_ENV = "JAXTUNE_API_KEY"


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """--base-url, --model, --api-key, --timeout, --retries, --max-error-rate."""
    parser.add_argument("--base-url", required=True,
                        help="server root, e.g. http://127.0.0.1:8000 (with or without /v1)")
    parser.add_argument("--model", required=True, help="model name as the server knows it")
    parser.add_argument("--api-key", help=f"bearer token (default: ${API_KEY_ENV} if set)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed per request (default 300)")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries when the connection cannot be made (default 3)")
    parser.add_argument("--max-error-rate", type=fraction, default=0.0, metavar="R",
                        help="share of requests (0-1) that may finally fail, after retries, "
                             "with a zero exit; failed requests are never scored or timed "
                             "(default 0: any failure exits non-zero)")


def quiet_http_logs() -> None:
    """httpx logs every request at INFO; thousands of lines would bury the progress bar."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def client_config_from_args(args: argparse.Namespace, *, endpoint: str = "completions",
                            concurrency: int = 8) -> ClientConfig:
    """A `ClientConfig` from the shared flags (and quiet per-request HTTP logs)."""
    quiet_http_logs()
    return ClientConfig(base_url=args.base_url, model=args.model, endpoint=endpoint,
                        concurrency=concurrency, timeout_s=args.timeout,
                        max_retries=args.retries,
                        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated integers >= 1, e.g. ``1,4,16``."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def float_list(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated positive numbers, e.g. ``0.5,2``."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected numbers > 0, got {text!r}")
    return values
