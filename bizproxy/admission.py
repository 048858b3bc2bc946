"""What a route checks before it acts on a body: signature first, then JSON, then schema."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from bizproxy.errors import SignatureFailure
from bizproxy.inbound import BadRequest, InboundRequest, Receive, read_body
from bizproxy.table import CompiledRoute

logger = logging.getLogger("bizproxy.verify")


@dataclass(frozen=True)
class AdmittedBody:
    raw: bytes
    parsed: Any
    message_id: str | None


def json_pointer(path: Any) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as error:
        raise BadRequest(
            400, "MalformedJSON", f"request body is not valid JSON: {error}"
        ) from error
    except RecursionError as error:
        raise BadRequest(
            400, "MalformedJSON", "request body is not valid JSON: nested too deeply"
        ) from error


def _refuse_constant(name: str) -> Any:
    # Python's parser accepts NaN and Infinity; JSON does not.
    raise ValueError(f"{name} is not a JSON value")


async def admit_body(
    route: CompiledRoute,
    request: InboundRequest,
    receive: Receive,
    limit: int,
    *,
    require_json: bool,
) -> AdmittedBody:
    """Read the whole body, verify its signature, parse it and check it against the schema."""
    request.check_declared_length(limit)
    raw = await read_body(receive, limit)

    message_id = None
    if route.verifier is not None:
        try:
            message_id = route.verifier.verify(request.headers, raw)
        except SignatureFailure as failure:
            logger.warning(
                "refused %s %s from %s: %s", request.method, route.path, request.peer, failure
            )
            raise

    if not raw and not require_json and route.body_validator is None:
        return AdmittedBody(raw, None, message_id)
    parsed = parse_json(raw)
    if route.body_validator is not None:
        violations = [
            {"pointer": json_pointer(error.absolute_path), "message": error.message}
            for error in sorted(route.body_validator.iter_errors(parsed), key=lambda e: e.path)
        ]
        if violations:
            raise BadRequest(
                422,
                "SchemaViolation",
                f"request body does not match the route's schema ({len(violations)} violations)",
                violations=violations,
            )
    return AdmittedBody(raw, parsed, message_id)
