"""Loading routes.yaml: YAML 1.2 scalars, environment substitution, marks, files, hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bizproxy.config import LoadedConfig, load_config, load_config_text, summary
from bizproxy.config.yaml_tree import parse_document
from bizproxy.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = "version: 1\nupstreams:\n  orders:\n    url: http://127.0.0.1:9001\n"


def _load(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> LoadedConfig:
    return load_config_text(text, filename="routes.yaml", base_dir=tmp_path, environ=environ or {})


def _problems(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _load(text, tmp_path, environ)
    return [str(problem) for problem in caught.value.problems]


def test_yaml_reads_only_true_and_false_as_booleans() -> None:
    """on, no, yes, off, y and n stay strings; true, True and TRUE are booleans."""
    text = "a: on\nb: no\nc: yes\nd: off\ne: y\nf: n\ng: true\nh: True\ni: TRUE\nj: False\n"
    data = parse_document(text, filename="t.yaml", environ={}).data
    assert data == {
        "a": "on",
        "b": "no",
        "c": "yes",
        "d": "off",
        "e": "y",
        "f": "n",
        "g": True,
        "h": True,
        "i": True,
        "j": False,
    }


def test_yaml_numbers_follow_the_core_schema() -> None:
    """1:30 stays a string, 0755 is decimal, 0o and 0x prefixes are octal and hex."""
    text = "a: 1:30\nb: 0755\nc: 0o17\nd: 0x1F\ne: 1_000\nf: .5\ng: 2001-12-14\nh: ~\n"
    data = parse_document(text, filename="t.yaml", environ={}).data
    assert data == {
        "a": "1:30",
        "b": 755,
        "c": 15,
        "d": 31,
        "e": "1_000",
        "f": 0.5,
        "g": "2001-12-14",
        "h": None,
    }


def test_header_value_no_arrives_as_the_string_no(tmp_path: Path) -> None:
    """A header written as NO is the two-letter string, not a boolean."""
    loaded = _load(UPSTREAM + "    headers: {X-Opt-In: NO, X-Version: 2}\n", tmp_path)
    assert loaded.model.upstreams["orders"].headers == {"X-Opt-In": "NO", "X-Version": "2"}


def test_marks_are_one_based_for_keys_and_values() -> None:
    """Every key and value keeps its 1-based line and column."""
    document = parse_document("a:\n  b: [x, y]\n", filename="t.yaml", environ={})
    assert (document.keys[("a", "b")].line, document.keys[("a", "b")].column) == (2, 3)
    assert (document.values[("a", "b", 1)].line, document.values[("a", "b", 1)].column) == (2, 10)


def test_environment_substitution_fills_defaults_and_escapes(tmp_path: Path) -> None:
    """${NAME}, ${NAME:-default} and $${ work inside strings, after parsing."""
    text = UPSTREAM + (
        '    headers: {X-A: "${A}", X-B: "${B:-fallback}", X-C: "$${literal}", X-D: "x-${A}-y"}\n'
    )
    loaded = _load(text, tmp_path, {"A": "alpha"})
    assert loaded.model.upstreams["orders"].headers == {
        "X-A": "alpha",
        "X-B": "fallback",
        "X-C": "${literal}",
        "X-D": "x-alpha-y",
    }


def test_substituted_values_never_change_structure(tmp_path: Path) -> None:
    """A value holding YAML syntax stays one string."""
    text = UPSTREAM + '    headers: {X-A: "${A}"}\n'
    loaded = _load(text, tmp_path, {"A": "x}, evil: {url: http://other"})
    assert loaded.model.upstreams["orders"].headers["X-A"].startswith("x}")
    assert list(loaded.model.upstreams) == ["orders"]


def test_plain_substitution_reads_as_a_scalar_of_its_own(tmp_path: Path) -> None:
    """An unquoted ${N} holding 3 is the integer 3; a quoted one stays text."""
    text = "version: 1\nserver:\n  workers: ${WORKERS:-1}\n"
    assert _load(text, tmp_path, {"WORKERS": "3"}).model.server.workers == 3
    quoted = "version: 1\nserver:\n  workers: '${WORKERS}'\n"
    assert _problems(quoted, tmp_path, {"WORKERS": "3"}) == [
        "routes.yaml:3:12: server.workers: expected an integer, got '${WORKERS}' (value not shown)"
    ]


def test_substituted_braces_render_literally_in_templates(tmp_path: Path) -> None:
    """An environment value holding {{ }} is text in a template, not template code."""
    text = UPSTREAM + (
        "routes:\n  - path: /a\n    forward:\n      upstream: orders\n"
        '      headers: {Authorization: "Bearer ${TOKEN}"}\n'
    )
    loaded = _load(text, tmp_path, {"TOKEN": "a{{ path.x }}b"})
    from bizproxy.templates import compile_template

    source = loaded.model.routes[0].forward.headers["Authorization"]  # type: ignore[union-attr]
    assert compile_template(source).render(path={}) == "Bearer a{{ path.x }}b"


def test_unset_variable_is_an_error_at_its_place(tmp_path: Path) -> None:
    """An unset variable without a default is reported where it is used, once."""
    problems = _problems(UPSTREAM + "    headers: {X-A: '${MISSING}'}\n", tmp_path)
    assert problems == [
        "routes.yaml:5:20: upstreams.orders.headers.X-A: environment variable MISSING is not "
        "set; set it or give a default as ${MISSING:-default}"
    ]


def test_malformed_references_are_errors(tmp_path: Path) -> None:
    """${1X} and an unterminated ${ are reported with the way to write them."""
    problems = _problems(UPSTREAM + "    headers: {X-A: '${1X}', X-B: 'a${b'}\n", tmp_path)
    assert problems == [
        "routes.yaml:5:20: upstreams.orders.headers.X-A: malformed reference '${1X}'; write "
        "${NAME} or ${NAME:-default}, or '$${' for a literal '${'",
        "routes.yaml:5:34: upstreams.orders.headers.X-B: unterminated '${' reference; close it "
        "with '}' or write '$${' for a literal '${'",
    ]


def test_relative_schema_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    """body_schema is read from beside the config, whatever the working directory."""
    (tmp_path / "schemas").mkdir()
    schema = tmp_path / "schemas" / "body.json"
    schema.write_text('{"type": "object"}')
    config = tmp_path / "routes.yaml"
    config.write_text(
        UPSTREAM + "routes:\n  - path: /h\n    methods: [POST]\n"
        "    body_schema: schemas/body.json\n    deliver: {upstream: orders}\n"
    )
    loaded = load_config(config, environ={})
    assert loaded.model.routes[0].body_schema == schema.resolve()
    assert loaded.schemas == {schema.resolve(): {"type": "object"}}
    assert loaded.files == (config.resolve(), schema.resolve())


def test_schema_paths_may_climb_out_of_the_config_folder(tmp_path: Path) -> None:
    """A ../ schema path resolves to the same key the loaded schemas use."""
    (tmp_path / "body.json").write_text('{"type": "object"}')
    (tmp_path / "conf").mkdir()
    text = UPSTREAM + (
        "routes:\n  - path: /h\n    methods: [POST]\n"
        "    body_schema: ../body.json\n    deliver: {upstream: orders}\n"
    )
    loaded = _load(text, tmp_path / "conf")
    route_schema = loaded.model.routes[0].body_schema
    assert route_schema == (tmp_path / "body.json").resolve()
    assert loaded.schemas[route_schema] == {"type": "object"}


def test_content_hash_covers_referenced_files(tmp_path: Path) -> None:
    """Editing a referenced schema changes the hash; the config alone starts it."""
    schema = tmp_path / "body.json"
    schema.write_text('{"type": "object"}')
    config = tmp_path / "routes.yaml"
    config.write_text(
        UPSTREAM + "routes:\n  - path: /h\n    methods: [POST]\n"
        "    body_schema: body.json\n    deliver: {upstream: orders}\n"
    )
    first = load_config(config, environ={}).content_hash
    schema.write_text('{"type": "object", "required": ["id"]}')
    second = load_config(config, environ={}).content_hash
    assert first != second
    plain = load_config_text(UPSTREAM, filename="r.yaml", base_dir=tmp_path, environ={})
    assert plain.content_hash == hashlib.sha256(UPSTREAM.encode()).hexdigest()


def test_load_config_raises_oserror_for_a_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read is an OSError, not a ConfigError."""
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.yaml")


def test_load_config_reports_text_that_is_not_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a located problem."""
    config = tmp_path / "routes.yaml"
    config.write_bytes(b"version: 1\nserver: {x: \xff}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert [p.message for p in caught.value.problems] == ["the file is not UTF-8 text"]
    assert (caught.value.problems[0].line, caught.value.problems[0].column) == (2, 13)


def test_aliases_expand_within_a_bound(tmp_path: Path) -> None:
    """Anchors may be reused; a document that expands without bound is refused."""
    text = UPSTREAM + "    headers: &h {X-A: a}\n  other:\n    url: http://127.0.0.1:9002\n"
    loaded = _load(text + "    headers: *h\n", tmp_path)
    assert loaded.model.upstreams["other"].headers == {"X-A": "a"}

    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, "
        bomb += f"*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
    problems = _problems(bomb, tmp_path)
    assert any("expands to over 500000 values" in problem for problem in problems)


def test_summary_counts_each_section(tmp_path: Path) -> None:
    """The summary line names the file and counts upstreams, routes, policies and budgets."""
    text = UPSTREAM + (
        "retry_policies: {standard: {}}\nthrottles: {a: {rate: 1/s}, b: {rate: 2/s}}\n"
        "routes:\n  - {path: /a, forward: {upstream: orders}}\n"
    )
    assert summary(_load(text, tmp_path)) == (
        "routes.yaml: 1 upstream, 1 route, 1 retry policy, 2 throttle budgets"
    )


def test_bundled_routes_yaml_loads_without_environment() -> None:
    """The bundled routes.yaml is valid with no environment variables set."""
    loaded = load_config(REPO / "routes.yaml", environ={})
    assert loaded.warnings == ()
    assert [route.path for route in loaded.model.routes] == [
        "/api/orders/{order_id}",
        "/api/orders",
        "/hooks/payments",
    ]
    assert loaded.files[1] == (REPO / "schemas" / "payment.schema.json").resolve()


def test_warnings_do_not_fail_a_load(tmp_path: Path) -> None:
    """Several workers with the memory store load, with a warning at server.workers."""
    loaded = _load("version: 1\nserver: {workers: 2}\n", tmp_path)
    assert [(w.severity, w.path, w.line, w.column) for w in loaded.warnings] == [
        ("warning", "server.workers", 2, 19)
    ]


def test_deep_nesting_is_refused_without_recursion(tmp_path: Path) -> None:
    """A document nested past the depth limit is one problem, however deep it goes."""
    deep = "version: 1\nx: " + "[" * 100_000 + "]" * 100_000 + "\n"
    assert _problems(deep, tmp_path) == ["routes.yaml:2:103: the YAML nests deeper than 100 levels"]


def test_aliases_keep_substituted_values_hidden(tmp_path: Path) -> None:
    """A problem inside an aliased value shows the reference where the anchor wrote it."""
    text = 'version: 1\nupstreams:\n  a: &up {url: http://127.0.0.1:1, timeout: "${T}"}\n  b: *up\n'
    problems = _problems(text, tmp_path, {"T": "hidden-value"})
    assert problems == [
        f"routes.yaml:3:45: upstreams.{name}.timeout: expected a duration such as 10s or a "
        "mapping of connect, read, write and pool, got '${T}' (value not shown)"
        for name in "ab"
    ]


def test_environment_values_are_masked_in_any_message(tmp_path: Path) -> None:
    """Text quoted from inside a substituted value is masked as a last defence."""
    text = UPSTREAM + 'routes:\n  - path: "/x/{p:${CONVERTOR}}"\n    forward: {upstream: orders}\n'
    problems = _problems(text, tmp_path, {"CONVERTOR": "hush-hush"})
    assert "hush-hush" not in "".join(problems)
    assert "{p:***}" in problems[0]


def test_keys_must_be_text_and_documents_single(tmp_path: Path) -> None:
    """Collection keys, undefined aliases and a second document are refused."""
    text = UPSTREAM + "  ? [x]\n  : 1\n  other: *nowhere\n"
    assert _problems(text, tmp_path) == [
        "routes.yaml:5:5: upstreams: a key must be plain text",
        "routes.yaml:7:10: upstreams.other: the alias *nowhere names no anchor defined before it",
    ]
    assert _problems("version: 1\n---\nversion: 1\n", tmp_path) == [
        "routes.yaml:2:1: expected one YAML document; a second one starts here"
    ]


def test_pure_python_parser_builds_the_same_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml, the pure-Python parser yields the same values and marks."""
    from bizproxy.config import yaml_tree

    text = (REPO / "routes.yaml").read_text(encoding="utf-8") + "extra: &e [on, 0o17, '${X:-1}']\n"
    fast = parse_document(text, filename="r.yaml", environ={})
    monkeypatch.setattr(yaml_tree, "_LOADER", yaml_tree.CoreSafeLoader)
    slow = parse_document(text, filename="r.yaml", environ={})
    assert slow.data == fast.data
    assert slow.values == fast.values and slow.keys == fast.keys
