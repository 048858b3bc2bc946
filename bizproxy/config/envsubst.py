"""`${NAME}` and `${NAME:-default}` references in config strings, filled from the environment.

Substitution happens on parsed scalar strings, never on the raw text, so a value can
never add keys or break the YAML around it. `$${` writes a literal `${`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REFERENCE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


class SubstitutionError(ValueError):
    """A reference is malformed, or names an unset variable that has no default."""


def substitute(
    text: str, environ: Mapping[str, str], *, escape: Callable[[str], str] | None = None
) -> tuple[str, tuple[str, ...]]:
    """Return the text with references filled in, and the values filled in.

    `escape`, when given, is applied to each substituted value (not to the text around it).
    """
    if "${" not in text:
        return text, ()

    pieces: list[str] = []
    unset: list[str] = []
    values: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        pieces.append(text[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token == "$${":
            pieces.append("${")
            continue
        if token == "${":
            raise SubstitutionError(
                "unterminated '${' reference; close it with '}' or write '$${' for a literal '${'"
            )
        value = _resolve(match.group(1), environ, unset)
        values.append(value)
        pieces.append(escape(value) if escape is not None else value)
    pieces.append(text[position:])

    if unset:
        raise SubstitutionError(_unset_message(unset))
    return "".join(pieces), tuple(values)


def _resolve(reference: str, environ: Mapping[str, str], unset: list[str]) -> str:
    match = _REFERENCE.match(reference)
    if match is None:
        raise SubstitutionError(
            f"malformed reference '${{{reference}}}'; write ${{NAME}} or ${{NAME:-default}}, "
            "or '$${' for a literal '${'"
        )
    name, default = match.group(1), match.group(2)
    value = environ.get(name)
    if value:
        return value
    if default is not None:
        return default
    if value is None:
        unset.append(name)
        return ""
    return value


def _unset_message(names: list[str]) -> str:
    if len(names) == 1:
        name = names[0]
        return (
            f"environment variable {name} is not set; set it or give a default "
            f"as ${{{name}:-default}}"
        )
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"environment variables {listed} are not set; set them or give defaults"
