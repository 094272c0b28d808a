"""Before an eval sends anything: is a server there, and does it serve the model?

Without this check a dead port, a server that failed to start or a misspelt model name turns
every request into an error, and the run reports a table of failures instead of one line that
says what to fix.
"""

from __future__ import annotations

import httpx

from eval.client import ClientConfig


class ServerCheckError(ValueError):
    """The server cannot be used for the eval; the message says what to change."""


def check_server(config: ClientConfig) -> list[str]:
    """GET /v1/models: raise `ServerCheckError` unless the server answers and lists
    `config.model`; returns the served model names."""
    served = served_models(config)
    if config.model not in served:
        raise ServerCheckError(f"the server at {config.api_base} does not serve model "
                               f"{config.model!r} (it serves: {', '.join(served) or 'nothing'}); "
                               "check --model")
    return served


def served_models(config: ClientConfig) -> list[str]:
    """GET /v1/models: the served model names; `ServerCheckError` unless the server answers
    with an OpenAI model list (`config.model` is not consulted)."""
    url = f"{config.api_base}/models"
    timeout = httpx.Timeout(min(config.timeout_s, 30.0), connect=config.connect_timeout_s)
    try:
        response = httpx.get(url, headers=config.headers, timeout=timeout)
    except httpx.ConnectError as exc:
        raise ServerCheckError(
            f"no server at {config.api_base} ({_reason(exc)}); start one with `jaxtune serve` "
            "or check --base-url") from None
    except httpx.TimeoutException:
        raise ServerCheckError(f"the server at {config.api_base} did not answer GET /v1/models "
                               f"in time; is it overloaded or still starting?") from None
    except httpx.HTTPError as exc:
        raise ServerCheckError(f"cannot reach {config.api_base}: {_reason(exc)}") from None
    if response.status_code in (401, 403):
        raise ServerCheckError(f"the server at {config.api_base} refused the API key (HTTP "
                               f"{response.status_code}); pass --api-key or set "
                               "$JAXTUNE_API_KEY")
    if response.status_code != 200:
        raise ServerCheckError(f"the server at {config.api_base} answered GET /v1/models with "
                               f"HTTP {response.status_code}{_error_message(response)}; "
                               "check --base-url, or wait until the server is ready")
    served = _model_ids(response)
    if served is None:
        raise ServerCheckError(f"{url} did not return an OpenAI model list; is --base-url an "
                               "OpenAI-compatible server?")
    return served


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text


def _error_message(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f" ({message})"


def _model_ids(response: httpx.Response) -> list[str] | None:
    try:
        data = response.json()["data"]
        return [str(item["id"]) for item in data]
    except (ValueError, KeyError, TypeError):
        return None
