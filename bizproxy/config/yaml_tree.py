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
from dataclasses import dataclass
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
# No config needs more; deeper documents are refused before anything recurses into them.
MAX_DEPTH = 100


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
        """The same rules over libyaml's parser, several times faster."""

    _install_core_resolvers(CoreCSafeLoader)
    _LOADER: type[Any] = CoreCSafeLoader
else:  # pragma: no cover - libyaml ships in the PyYAML wheels
    _LOADER = CoreSafeLoader


def mark_of(event: yaml.Event) -> Mark:
    mark = event.start_mark
    return Mark(mark.line + 1, mark.column + 1) if mark is not None else Mark(1, 1)


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
        document.data = _Builder(document, environ, loader, template_paths).build()
    except yaml.MarkedYAMLError as err:
        document.data = None
        _add_syntax_problem(document, err)
    except yaml.reader.ReaderError as err:
        document.data = None
        before = text[: err.position]
        where = Mark(before.count("\n") + 1, err.position - (before.rfind("\n") + 1) + 1)
        code = f"#x{err.character:04x}" if isinstance(err.character, int) else repr(err.character)
        document.add((), f"invalid YAML: character {code} is not allowed: {err.reason}", mark=where)
    finally:
        loader.dispose()
    return document


def _add_syntax_problem(document: Document, err: yaml.MarkedYAMLError) -> None:
    mark = err.problem_mark or err.context_mark
    where = Mark(mark.line + 1, mark.column + 1) if mark is not None else Mark(1, 1)
    detail = err.problem or "malformed YAML"
    context = f" ({err.context})" if err.context else ""
    document.add((), f"invalid YAML: {detail}{context}", mark=where)


class _Stop(Exception):
    """The document is refused as a whole; its problem is recorded."""


_EXPECT_KEY = object()
_SKIP = object()


@dataclass(slots=True)
class _Frame:
    """An open mapping or sequence, and where its next child goes."""

    container: dict[str, Any] | list[Any]
    path: KeyPath
    anchor: str | None
    discard: bool
    is_key: bool = False
    size: int = 1
    key: object = _EXPECT_KEY


class _Builder:
    """Builds plain values from parser events, recording marks and problems on the way.

    Working from events rather than composed nodes keeps nesting off the call stack, so
    no document can exhaust it; aliases share the anchored value, and the values they
    stand for are counted so that a document cannot expand without bound.
    """

    def __init__(
        self,
        document: Document,
        environ: Mapping[str, str],
        loader: Any,
        template_paths: Callable[[KeyPath], bool],
    ) -> None:
        self.document = document
        self.environ = environ
        self.loader = loader
        self.template_paths = template_paths
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int, KeyPath]] = {}
        self.open_anchors: set[str] = set()
        self.count = 0
        self.root: Any = None

    def build(self) -> Any:
        documents = 0
        try:
            while self.loader.check_event():
                event = self.loader.get_event()
                if isinstance(event, yaml.DocumentStartEvent):
                    documents += 1
                    if documents > 1:
                        message = "expected one YAML document; a second one starts here"
                        self.document.add((), message, mark=mark_of(event))
                        raise _Stop
                elif isinstance(event, yaml.CollectionEndEvent):
                    self.end_collection()
                elif isinstance(event, yaml.NodeEvent):
                    self.node(event)
        except _Stop:
            return None
        return self.root

    def node(self, event: yaml.NodeEvent) -> None:
        self.count += 1
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.container, dict) and top.key is _EXPECT_KEY:
            self.key(top, event)
            return

        if top is None:
            path: KeyPath = ()
        elif isinstance(top.container, dict):
            path = (*top.path, top.key if isinstance(top.key, str) else "<skipped>")
        else:
            path = (*top.path, len(top.container))
        discard = top is not None and (top.discard or top.key is _SKIP)
        if not discard:
            self.document.values[path] = mark_of(event)

        if isinstance(event, yaml.CollectionStartEvent):
            self.start_collection(event, path, discard)
        elif isinstance(event, yaml.AliasEvent):
            value, size = self.alias(event, path, discard)
            self.place(value, size)
        elif isinstance(event, yaml.ScalarEvent):
            value = self.scalar(event, path, discard)
            self.remember(event.anchor, value, 1, path)
            self.place(value, 1)

    def key(self, top: _Frame, event: yaml.NodeEvent) -> None:
        if isinstance(event, yaml.CollectionStartEvent):
            self.document.add(top.path, "a key must be plain text", mark=mark_of(event))
            self.start_collection(event, (*top.path, "<key>"), discard=True, is_key=True)
            return
        text: object = None
        if isinstance(event, yaml.AliasEvent):
            anchored = self.anchors.get(event.anchor or "")
            text = anchored[0] if anchored is not None else None
        elif isinstance(event, yaml.ScalarEvent):
            text = str(event.value)
            self.remember(event.anchor, text, 1, top.path)
        if not isinstance(text, str):
            self.document.add(top.path, "a key must be plain text", mark=mark_of(event))
            top.key = _SKIP
            return

        key_path = (*top.path, text)
        if text in top.container:
            first = self.document.keys[key_path].line
            message = f"duplicate key {text!r}; it is already set on line {first}"
            self.document.add(key_path, message, mark=mark_of(event))
            top.key = _SKIP
            return
        if not top.discard:
            self.document.keys[key_path] = mark_of(event)
        top.key = text

    def start_collection(
        self, event: yaml.CollectionStartEvent, path: KeyPath, discard: bool, is_key: bool = False
    ) -> None:
        if len(self.stack) >= MAX_DEPTH:
            self.document.add(
                (), f"the YAML nests deeper than {MAX_DEPTH} levels", mark=mark_of(event)
            )
            raise _Stop
        is_mapping = isinstance(event, yaml.MappingStartEvent)
        expected = _MAP if is_mapping else _SEQ
        if event.tag not in (None, "!", expected) and not discard:
            self.document.add(path, f"unsupported tag {_tag_name(event.tag)!r}")
        container: dict[str, Any] | list[Any] = {} if is_mapping else []
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame(container, path, event.anchor, discard, is_key))

    def end_collection(self) -> None:
        frame = self.stack.pop()
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            self.remember(frame.anchor, frame.container, frame.size, frame.path)
        if frame.is_key:
            self.stack[-1].key = _SKIP
            return
        self.place(frame.container, frame.size)

    def alias(self, event: yaml.AliasEvent, path: KeyPath, discard: bool) -> tuple[Any, int]:
        anchor = event.anchor
        if anchor in self.open_anchors or anchor not in self.anchors:
            if not discard:
                reason = (
                    "refers to a value that contains it"
                    if anchor in self.open_anchors
                    else ("names no anchor defined before it")
                )
                self.document.add(path, f"the alias *{anchor} {reason}")
                self.document.broken.add(path)
            return None, 1
        value, size, origin = self.anchors[anchor]
        self.count += size
        if self.count > MAX_VALUES:
            self.document.add(path, f"the document expands to over {MAX_VALUES} values")
            raise _Stop
        if not discard:
            self.document.aliases[path] = origin
        return value, size

    def remember(self, anchor: str | None, value: Any, size: int, path: KeyPath) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, size, path)

    def place(self, value: Any, size: int) -> None:
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.container, list):
            top.container.append(value)
            return
        if isinstance(top.key, str):
            top.container[top.key] = value
        top.key = _EXPECT_KEY

    def scalar(self, event: yaml.ScalarEvent, path: KeyPath, discard: bool) -> Any:
        text: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, text, event.implicit)
        if discard:
            return text
        if tag == _STR:
            return self.string(event, text, path)
        try:
            return _construct(tag, text)
        except ValueError as err:
            self.document.add(path, str(err))
            return text

    def string(self, event: yaml.ScalarEvent, text: str, path: KeyPath) -> Any:
        try:
            escape = templates.literal if self.template_paths(path) else None
            value, filled = substitute(text, self.environ, escape=escape)
        except SubstitutionError as err:
            self.document.add(path, str(err))
            self.document.broken.add(path)
            return None
        if not filled:
            return value
        self.document.substituted[path] = text
        self.document.secrets.update(filled)
        if event.style:  # libyaml marks plain scalars with '', PyYAML with None
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
