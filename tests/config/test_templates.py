"""The template sandbox: strict, without globals, and readable by the config checks."""

from __future__ import annotations

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from bizproxy import templates


def test_templates_render_request_values() -> None:
    """A compiled template renders path, query and headers values."""
    template = templates.compile_template("/v2/{{ path.id }}?t={{ headers['x-tenant'] | upper }}")
    assert template.render(path={"id": "7"}, headers={"x-tenant": "acme"}) == "/v2/7?t=ACME"


def test_templates_raise_on_undefined_names() -> None:
    """An undefined value raises instead of rendering as empty text."""
    template = templates.compile_template("{{ path.missing }}")
    with pytest.raises(jinja2.UndefinedError):
        template.render(path={})


def test_templates_see_no_globals() -> None:
    """range, dict, lipsum and friends are not available."""
    with pytest.raises(jinja2.UndefinedError):
        templates.compile_template("{{ range(3) | length }}").render()


def test_templates_are_sandboxed() -> None:
    """Reaching for dunder attributes is refused."""
    template = templates.compile_template("{{ path.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        template.render(path={}).strip()
    with pytest.raises(SecurityError):
        templates.compile_template("{{ query.clear() }}").render(query={"a": "b"})


def test_check_template_refuses_unknown_filters_and_includes() -> None:
    """Unknown filters and include/import/extends are syntax errors at check time."""
    with pytest.raises(jinja2.TemplateSyntaxError, match="no filter named 'shout'"):
        templates.check_template("{{ x | shout }}")
    with pytest.raises(jinja2.TemplateSyntaxError, match="may not include"):
        templates.check_template("{% include 'other' %}")
    with pytest.raises(jinja2.TemplateSyntaxError):
        templates.check_template("{{ x }")


def test_referenced_path_params_reads_attribute_and_item_access() -> None:
    """path.x and path['y'] are found; other names and dynamic keys are not."""
    source = "{{ path.a }}{{ path['b'] }}{{ query.c }}{{ path[name] }}{% if path.d %}{% endif %}"
    assert templates.referenced_path_params(source) == {"a", "b", "d"}


def test_referenced_names_lists_top_level_names() -> None:
    """The names a template reads are listed, loop variables excepted."""
    source = "{% for x in query.items %}{{ x }}{% endfor %}{{ body.id }}"
    assert templates.referenced_names(source) == {"query", "body"}


def test_literal_renders_braces_as_text() -> None:
    """literal() turns any text into a template that renders exactly it."""
    text = "a{{ b }}{% c %}{# d #}}"
    assert templates.compile_template(templates.literal(text)).render() == text


@pytest.mark.parametrize(
    "source",
    [
        "/v2/orders/{{ path.id }}",
        "/a/{{ path.id }}/b/{{ path.rest }}.json",
        "/static",
        "{{ path.rest }}",
    ],
)
def test_templates_fast_path_renders_like_jinja(source: str) -> None:
    """The join-only path renderer gives exactly what the Jinja2 path template gives."""
    from bizproxy.templates import _PATH_ENVIRONMENT, PathParameterTemplate, RestOfPath

    fast = templates.compile_path_template(source)
    assert isinstance(fast, PathParameterTemplate)
    context = {"path": {"id": "a?b#c/d e%", "rest": RestOfPath("x/y z/ü")}}
    assert fast.render(context) == _PATH_ENVIRONMENT.from_string(source).render(context)


def test_templates_path_with_filters_uses_jinja() -> None:
    """Anything beyond text and path.name goes through Jinja2."""
    from bizproxy.templates import PathParameterTemplate

    slow = templates.compile_path_template("/{{ path.id | upper }}")
    assert not isinstance(slow, PathParameterTemplate)
