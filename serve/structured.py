"""A request's output constraint (`response_format`, vLLM's `structured_outputs`) as the
engine's `StructuredOutput`, with the checks that need no engine.

Constrained decoding itself is vLLM's (its structured-output backend, xgrammar by default);
here we only pick the one constraint and check that a JSON schema is a JSON schema
(`jsonschema`'s meta-schema check, whose message the 400 carries). Regexes and grammars are
checked by the engine's own backend (`Engine.check`), which is the parser that will use them.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError

from serve.engine import StructuredOutput
from serve.errors import InvalidRequestError
from serve.protocol import JsonObjectFormat, JsonSchemaFormat, SamplingFields, StructuredOutputs

_KINDS = ("json", "regex", "choice", "grammar", "json_object")


def check_json_schema(schema: Any, param: str) -> None:
    """400 naming `param` unless `schema` is a valid JSON schema (its own `$schema` dialect,
    else draft 2020-12)."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"'{param}' must be a JSON schema object",
                                  param=param, code="invalid_schema")
    try:
        validators.validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" (at '{where}')" if where else ""
        raise InvalidRequestError(f"'{param}' is not a valid JSON schema{at}: {exc.message}",
                                  param=param, code="invalid_schema") from exc
    except Exception as exc:  # e.g. a "$schema" that is not a string: still the client's input
        raise InvalidRequestError(f"'{param}' is not a valid JSON schema: {exc}", param=param,
                                  code="invalid_schema") from exc


def structured_output(body: SamplingFields) -> StructuredOutput | None:
    """The request's constraint, or None; 400 when it asks for two or a malformed one."""
    from_format = _from_response_format(body)
    from_vllm = _from_structured_outputs(body.structured_outputs)
    if from_format is not None and from_vllm is not None:
        raise InvalidRequestError("Give either 'response_format' or 'structured_outputs', not "
                                  "both", param="structured_outputs", code="invalid_value")
    return from_format or from_vllm


def _from_response_format(body: SamplingFields) -> StructuredOutput | None:
    fmt = body.response_format
    if isinstance(fmt, JsonObjectFormat):
        return StructuredOutput("json_object", True, "response_format")
    if isinstance(fmt, JsonSchemaFormat):
        param = "response_format.json_schema.schema"
        check_json_schema(fmt.json_schema.schema_, param)
        return StructuredOutput("json", fmt.json_schema.schema_, param)
    return None  # absent, or {"type": "text"}


def _from_structured_outputs(spec: StructuredOutputs | None) -> StructuredOutput | None:
    if spec is None:
        return None
    values = spec.given()
    given = [kind for kind in _KINDS if kind in values]
    if len(given) != 1:
        found = f"got {', '.join(given)}" if given else "got none"
        raise InvalidRequestError(f"'structured_outputs' takes exactly one of {', '.join(_KINDS)}"
                                  f" ({found})", param="structured_outputs",
                                  code="invalid_value")
    (kind,) = given
    param = f"structured_outputs.{kind}"
    value = values[kind]
    if kind == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(f"'{param}' is not valid JSON: {exc}", param=param,
                                          code="invalid_schema") from exc
        check_json_schema(value, param)
    elif kind == "json_object" and value is not True:
        raise InvalidRequestError(f"'{param}' must be true if given", param=param,
                                  code="invalid_value")
    elif kind in ("regex", "grammar") and not value.strip():
        raise InvalidRequestError(f"'{param}' must not be empty", param=param,
                                  code="invalid_value")
    elif kind == "choice":
        value = tuple(value)
    return StructuredOutput(kind, value, param)
