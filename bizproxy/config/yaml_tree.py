"""Safe YAML with YAML 1.2 core scalars, strict mappings and a mark for every node.

Only `true`/`false` (in any of the three core spellings) are booleans, so `on`, `no`
and `yes` stay strings; there are no sexagesimal numbers (`1:30` is a string), no
timestamps and no merge keys; integers are decimal, `0o` octal or `0x` hex. Duplicate
keys are reported at the later key. Values are built here rather than by PyYAML's
constructor so that each one keeps its place and `${NAME}` references are filled into
strings after parsing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from bizproxy import templates
from bizproxy.config.document import Document, KeyPath, Mark
from bizproxy.config.envsubst import SubstitutionError, substitute

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT = f"{_TAG}str", f"{_TAG}int", f"{_TAG}float"
_BOOL, _NULL = f"{_TAG}bool", f"{_TAG}null"
_MAP, _SEQ = f"{_TAG}map", f"{_TAG}seq"

# YAML 1.2 core schema, section 10.3.2.
_CORE_RESOLVERS: list[tuple[str, str, str]] = [
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (_INT, r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        _FLOAT,
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    (_NULL, r"^(?:~|null|Null|NULL|)$", "~nN"),
]

# A document that expands past this many values through aliases is refused.
MAX_VALUES = 500_000


def _install_core_resolvers(cls: type[yaml.resolver.BaseResolver]) -> None:
    cls.yaml_implicit_resolvers = {}
    for tag, pattern, first in _CORE_RESOLVERS:
        cls.add_implicit_resolver(tag, re.compile(pattern), [*first])
    cls.add_implicit_resolver(_NULL, re.compile(r"^$"), [""])


class CoreSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, resolving plain scalars by the YAML 1.2 core schema."""


_install_core_resolvers(CoreSafeLoader)

if yaml.__with_libyaml__:

    class CoreCSafeLoader(yaml.CSafeLoader):
        """The same rules over libyaml's parser, which composes nodes several times faster."""

    _install_core_resolvers(CoreCSafeLoader)
    _LOADER: type[Any] = CoreCSafeLoader
else:  # pragma: no cover - libyaml ships in the PyYAML wheels
    _LOADER = CoreSafeLoader


def mark_of(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _never(path: KeyPath) -> bool:
    return False


def parse_document(
    text: str,
    *,
    filename: str,
    environ: Mapping[str, str],
    template_paths: Callable[[KeyPath], bool] = _never,
) -> Document:
    """Parse one YAML document into a Document; syntax problems land in its problem list.

    Values substituted into strings at `template_paths` render literally, so that an
    environment value holding braces is never read as template code.
    """
    document = Document(filename)
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        _add_syntax_problem(document, err)
        return document
    except yaml.reader.ReaderError as err:
        before = text[: err.position]
        where = Mark(before.count("\n") + 1, err.position - (before.rfind("\n") + 1) + 1)
        code = f"#x{err.character:04x}" if isinstance(err.character, int) else repr(err.character)
        document.add((), f"invalid YAML: character {code} is not allowed: {err.reason}", mark=where)
        return document
    except RecursionError:
        document.add((), "the YAML nests too deeply to read")
        return document
    finally:
        loader.dispose()
    if root is not None:
        document.data = _Builder(document, environ, loader, template_paths).value(root, ())
    return document


def _add_syntax_problem(document: Document, err: yaml.MarkedYAMLError) -> None:
    mark = err.problem_mark or err.context_mark
    where = Mark(mark.line + 1, mark.column + 1) if mark is not None else Mark(1, 1)
    detail = err.problem or "malformed YAML"
    context = f" ({err.context})" if err.context else ""
    document.add((), f"invalid YAML: {detail}{context}", mark=where)


class _Builder:
    """Turns composed nodes into plain values, recording marks and problems on the way."""

    def __init__(
        self,
        document: Document,
        environ: Mapping[str, str],
        loader: Any,
        template_paths: Callable[[KeyPath], bool],
    ) -> None:
        self.document = document
        self.template_paths = template_paths
        self.environ = environ
        self.loader = loader
        self.count = 0
        self.active: set[int] = set()

    def value(self, node: yaml.Node, path: KeyPath) -> Any:
        self.document.values[path] = mark_of(node)
        self.count += 1
        if self.count == MAX_VALUES:
            self.document.add(path, f"the document expands to over {MAX_VALUES} values")
        if self.count >= MAX_VALUES:
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            self.document.add(path, "an alias here refers to a value that contains it")
            self.document.broken.add(path)
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node, path)
            return None
        finally:
            self.active.discard(id(node))

    def sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        if node.tag != _SEQ:
            self.document.add(path, f"unsupported tag {_tag_name(node.tag)!r}")
        return [self.value(child, (*path, index)) for index, child in enumerate(node.value)]

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        if node.tag != _MAP:
            self.document.add(path, f"unsupported tag {_tag_name(node.tag)!r}")
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.document.add(path, "a key must be plain text", mark=mark_of(key_node))
                continue
            key = str(key_node.value)
            key_path = (*path, key)
            if key in result:
                first = self.document.keys[key_path].line
                self.document.add(
                    key_path,
                    f"duplicate key {key!r}; it is already set on line {first}",
                    mark=mark_of(key_node),
                )
                continue
            self.document.keys[key_path] = mark_of(key_node)
            result[key] = self.value(value_node, key_path)
        return result

    def scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        text: str = node.value
        tag = node.tag
        if tag == _STR:
            return self.string(node, text, path)
        try:
            return _construct(tag, text)
        except ValueError as err:
            self.document.add(path, str(err))
            return text

    def string(self, node: yaml.ScalarNode, text: str, path: KeyPath) -> Any:
        try:
            escape = templates.literal if self.template_paths(path) else None
            value, referenced = substitute(text, self.environ, escape=escape)
        except SubstitutionError as err:
            self.document.add(path, str(err))
            self.document.broken.add(path)
            return None
        if not referenced:
            return value
        self.document.substituted[path] = text
        if node.style:  # libyaml marks plain scalars with '', PyYAML with None
            return value
        # A plain scalar reads as if its value had been written in its place: `${N}` holding
        # "3" is the integer 3. Quoted scalars stay strings.
        tag = self.loader.resolve(yaml.ScalarNode, value, (True, False))
        return value if tag == _STR else _construct(tag, value)


def _tag_name(tag: str) -> str:
    return f"!!{tag.removeprefix(_TAG)}" if tag.startswith(_TAG) else tag


def _construct(tag: str, text: str) -> Any:
    if tag == _NULL:
        if text not in ("", "~", "null", "Null", "NULL"):
            raise ValueError(f"expected null, got {text!r}")
        return None
    if tag == _BOOL:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() == "true"
    if tag == _INT:
        return _integer(text)
    if tag == _FLOAT:
        return _float(text)
    raise ValueError(f"unsupported tag {_tag_name(tag)!r}")


def _integer(text: str) -> int:
    try:
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
