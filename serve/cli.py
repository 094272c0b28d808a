"""`jaxtune serve`: run the OpenAI-compatible server on one or more HF model folders."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from serve.kv_cache import EngineStartError
from serve.settings import (
    API_KEY_ENV,
    LoraSource,
    ModelSource,
    ServeConfigError,
    ServeSettings,
    check_lora_dir,
    check_model_dir,
    resolve_api_key,
)
from serve.settings_flags import Flag, add_flags, flag_values, flags_of

if TYPE_CHECKING:
    from serve.app import EngineFactory
    from serve.engine import Engine

logger = logging.getLogger(__name__)

# The `ServeSettings` fields set by the hand-written flags below: the model list and adapters
# are built from several flags, the API key also comes from the environment. Every other field
# is a flag generated from the field, its default and help written only in `ServeSettings`.
HAND_WRITTEN_FIELDS = ("models", "loras", "api_key")


def settings_flags() -> list[Flag]:
    """The flags generated from `ServeSettings`."""
    return flags_of(ServeSettings, exclude=HAND_WRITTEN_FIELDS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `jaxtune serve` (registered by the `infra.cli` dispatcher)."""
    parser.add_argument("--model", required=True, type=Path, metavar="HF_DIR",
                        help="HF model folder to serve (a base model or a merged export)")
    parser.add_argument("--name", help="name clients use in 'model' (default: folder name)")
    parser.add_argument("--extra-model", action="append", default=[], metavar="NAME=DIR",
                        help="serve another full model folder (e.g. another merged export) "
                             "under NAME; repeatable")
    parser.add_argument("--lora", action="append", default=[], metavar="NAME=DIR",
                        help="serve a PEFT LoRA adapter on top of --model under NAME; "
                             "repeatable")
    parser.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' on /v1/* "
                                          f"(default: ${API_KEY_ENV} if set, else no auth)")
    add_flags(parser, settings_flags())


def _pairs(values: list[str], flag: str) -> list[tuple[str, Path]]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ServeConfigError(f"{flag} expects NAME=DIR, got {value!r}")
        out.append((name, Path(path)))
    return out


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Validated `ServeSettings` from parsed flags (folders are checked to exist, and a
    --tool-call-parser to be one of vLLM's: before any engine starts)."""
    main_dir = check_model_dir(args.model)
    main_name = args.name or main_dir.resolve().name
    models = [ModelSource(main_name, main_dir)]
    models += [ModelSource(name, check_model_dir(path))
               for name, path in _pairs(args.extra_model, "--extra-model")]
    loras = [LoraSource(name, check_lora_dir(path), base=main_name)
             for name, path in _pairs(args.lora, "--lora")]
    settings = ServeSettings(models=tuple(models), loras=tuple(loras),
                             api_key=resolve_api_key(args.api_key),
                             **flag_values(args, settings_flags()))
    if settings.tool_call_parser is not None:
        check_tool_call_parser(settings.tool_call_parser)
    return settings


def check_tool_call_parser(name: str) -> None:
    """`ServeConfigError` (one line, listing the valid names) unless vLLM has parser `name`."""
    try:
        from serve.vllm_tools import check_parser_name
    except ImportError as exc:  # vLLM missing: the server could not run anyway
        raise ServeConfigError(f"--tool-call-parser needs vLLM, which cannot be imported: "
                               f"{exc}") from exc
    check_parser_name(name)


def run(args: argparse.Namespace, engine_factory: EngineFactory | None = None) -> int:
    """Serve until interrupted (SIGINT/SIGTERM drain, then stop the engine).

    If the engine cannot start, raises its `EngineStartError` once uvicorn has exited, so the
    command ends with one line naming the cause and the flag to change (and a non-zero exit),
    not only with vLLM's log.
    """
    import uvicorn

    from serve.app import create_app, start_vllm_engine

    settings = settings_from_args(args)
    logger.info("jaxtune serve on http://%s:%d (models: %s; adapters: %s; auth: %s)",
                settings.host, settings.port, ", ".join(m.name for m in settings.models),
                ", ".join(lo.name for lo in settings.loras) or "none",
                "api key" if settings.api_key else "off")
    start = engine_factory or start_vllm_engine
    failures: list[EngineStartError] = []

    async def factory(s: ServeSettings) -> Engine:
        try:
            return await start(s)
        except EngineStartError as exc:
            failures.append(exc)
            raise

    # The start-up error is explained in one line below: no traceback of it from uvicorn.
    quiet = _DropRecords(EngineStartError.__name__)
    logging.getLogger("uvicorn.error").addFilter(quiet)
    try:
        # log_config=None: uvicorn's own logging set-up (dictConfig) closes every handler already
        # configured, which broke the caller's logging when serve runs in-process (the tests);
        # its records reach the root handler instead, in jaxtune's format.
        uvicorn.run(create_app(settings, factory), host=settings.host, port=settings.port,
                    access_log=False, log_level="info", log_config=None,
                    timeout_graceful_shutdown=max(int(settings.drain_timeout_s), 1))
    except SystemExit:  # uvicorn's exit when the app's start-up failed
        if failures:
            raise failures[0] from None
        raise
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    return 0


class _DropRecords(logging.Filter):
    """Drops log records whose message mentions `text`."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()
