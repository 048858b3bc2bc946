"""Pydantic validation errors, retold as located problems an operator can act on.

Pydantic reports where a value sits in the model (`loc`); walking the models alongside
the document turns that into a key path, the mark of the value at fault (the key, for
an unknown key; the mapping, for a missing one) and a sentence that says what was
expected, with the nearest valid name when one is close.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from bizproxy.config.document import Document, KeyPath, describe, suggest

_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "dict_type": "a mapping",
    "mapping_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "iterable_type": "a list",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}

_NOT_BOOLEANS = {"yes", "no", "on", "off", "y", "n"}


@dataclass
class _Place:
    path: KeyPath
    annotation: Any
    owner: type[BaseModel] | None
    key: bool


def add_validation_problems(
    error: ValidationError, document: Document, root: type[BaseModel]
) -> None:
    """Add one located problem to the document for each of pydantic's errors."""
    for item in error.errors(include_url=False):
        _add_one(item, document, root)


def _add_one(item: Mapping[str, Any], document: Document, root: type[BaseModel]) -> None:
    kind: str = item["type"]
    ctx: Mapping[str, Any] = item.get("ctx") or {}
    place = _locate(item["loc"], root)
    path = place.path
    if document.is_broken(path):
        return
    shown = document.show(path, item.get("input"))

    if kind == "missing":
        document.add(path[:-1], f"missing required key {path[-1]!r}")
    elif kind == "extra_forbidden":
        document.add(path, _unknown_key(path[-1], place.owner), key=True)
    elif kind == "literal_error":
        document.add(path, _literal(place.annotation, item.get("input"), shown))
    elif kind == "union_tag_invalid":
        tag_path = (*path, "scheme")
        expected = ctx.get("expected_tags", "")
        shown_tag = document.show(tag_path, ctx.get("tag"))
        document.add(tag_path, f"expected one of {expected}, got {shown_tag}")
    elif kind == "union_tag_not_found":
        document.add(path, f"missing required key {ctx.get('discriminator', '')}")
    elif kind in ("value_error", "assertion_error"):
        message = _hide_value(str(ctx.get("error", item["msg"])), path, document)
        document.add(path, message, key=place.key)
    elif kind in _TYPE_WORDS:
        document.add(path, _type_message(kind, item.get("input"), shown), key=place.key)
    elif kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        document.add(path, f"expected {words} {ctx.get(name)}, got {shown}", key=place.key)
    elif kind in ("too_short", "too_long"):
        words = "at least" if kind == "too_short" else "at most"
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        noun = "item" if limit == 1 else "items"
        document.add(path, f"expected {words} {limit} {noun}, got {shown}")
    elif kind in ("store_kind", "budget_kind"):
        document.add(path, f"{item['msg']}, got {shown}")
    else:
        document.add(path, str(item["msg"]), key=place.key)


def _unknown_key(key: object, owner: type[BaseModel] | None) -> str:
    allowed = list(owner.model_fields) if owner is not None else []
    hint = suggest(str(key), allowed)
    if not hint and len(allowed) == 1:
        hint = f"; the only key here is {allowed[0]!r}"
    elif not hint and allowed:
        hint = f"; expected one of {', '.join(allowed)}"
    return f"unknown key {key!r}{hint}"


def _literal(annotation: Any, value: object, shown: str) -> str:
    choices = list(get_args(annotation)) if get_origin(annotation) is Literal else []
    listed = ", ".join(describe(choice) for choice in choices)
    expected = listed if len(choices) == 1 else f"one of {listed}"
    words = [str(choice) for choice in choices]
    hint = suggest(value, words) if isinstance(value, str) else ""
    return f"expected {expected}, got {shown}{hint}"


def _type_message(kind: str, value: object, shown: str) -> str:
    message = f"expected {_TYPE_WORDS[kind]}, got {shown}"
    if kind.startswith("bool") and isinstance(value, str) and value.lower() in _NOT_BOOLEANS:
        message += "; only true and false are booleans"
    return message


def _hide_value(message: str, path: KeyPath, document: Document) -> str:
    """Replace the ", got <value>" tail for values that came from the environment."""
    if document.substituted_text(path) is None:
        return message
    head, found, _ = message.rpartition(", got ")
    if not found:
        return message
    return f"{head}, got {document.show(path, None)}"


def _locate(loc: Sequence[int | str], root: type[BaseModel]) -> _Place:
    annotation: Any = root
    owner: type[BaseModel] | None = None
    path: list[int | str] = []
    key = False
    for part in loc:
        annotation = _unwrap(annotation)
        if part == "[key]":
            key = True
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            owner = annotation
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field is not None else None
            path.append(part)
        elif _is_union(annotation):
            annotation = _member(annotation, part)
        else:
            annotation = _item_type(annotation)
            path.append(part)
    return _Place(tuple(path), _unwrap(annotation), owner, key)


def _unwrap(annotation: Any) -> Any:
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif _is_union(annotation):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _member(annotation: Any, tag: object) -> Any:
    for member in get_args(annotation):
        if _tag_of(member) == tag:
            return member
    return None


def _tag_of(member: Any) -> object:
    if get_origin(member) is Annotated:
        for meta in get_args(member)[1:]:
            if isinstance(meta, Tag):
                return meta.tag
        member = get_args(member)[0]
    if isinstance(member, type) and issubclass(member, BaseModel):
        scheme = member.model_fields.get("scheme")
        if scheme is not None and get_origin(scheme.annotation) is Literal:
            return get_args(scheme.annotation)[0]
    return None


def _item_type(annotation: Any) -> Any:
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin in (dict, Mapping):
        return args[1] if len(args) == 2 else None
    return args[0] if args else None
