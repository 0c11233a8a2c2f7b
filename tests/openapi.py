"""Validation of Batch requests and responses against batch-openapi-excerpt.yaml.

The spec is vendored in tests/data (a copy of shared/provider-docs; a test keeps the two equal).
Its only parts marked inferred (the create name pattern, the 404/503 body schema) are kept: our
requests and the emulator's answers satisfy them too, so checking them costs no fidelity.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "data" / "batch-openapi-excerpt.yaml"
SHARED_SPEC = Path(__file__).parents[2] / "shared" / "provider-docs" / SPEC_PATH.name
URN = "urn:batch-openapi"


@functools.cache
def spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8")))


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(URN, Resource.from_contents(spec(), DRAFT202012))


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _validate(pointer: str, instance: Any) -> None:
    validator = jsonschema.Draft202012Validator({"$ref": f"{URN}#/{pointer}"}, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        raise AssertionError(
            f"{pointer}: " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])
        )


def operation_of(path: str) -> str:
    """'/2.3/audiences/update' -> '/audiences/update'."""
    return "/" + path.split("/", 2)[2]


def validate_request(method: str, path: str, body: Any) -> None:
    op = operation_of(path)
    operation = spec()["paths"][op][method.lower()]
    if "requestBody" in operation:
        schema = ("paths", op, method.lower(), "requestBody", "content", "application/json")
        _validate(_pointer(*schema, "schema"), body)


def validate_response(method: str, path: str, status: int, body: Any) -> None:
    """Check an answer against its documented response; an error status the operation does not
    document (a wrong route or method, 409 on create: inferred) must still be an ``Error``."""
    op = operation_of(path)
    responses = spec()["paths"].get(op, {}).get(method.lower(), {}).get("responses", {})
    if str(status) not in responses:
        assert status >= 400, f"{method} {op} does not document status {status}"
        _validate(_pointer("components", "schemas", "Error"), body)
        return
    response = responses[str(status)]
    if "$ref" in response:
        response = spec()["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
        base = ("components", "responses", responses[str(status)]["$ref"].rsplit("/", 1)[-1])
    else:
        base = ("paths", op, method.lower(), "responses", str(status))
    _validate(_pointer(*base, "content", "application/json", "schema"), body)
