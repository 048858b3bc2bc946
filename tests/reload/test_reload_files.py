"""Hot reload of a running `bizproxy serve`, with the file saved the ways editors save it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.cli_server import ServeProcess, serve_process

VERSION = """
version: 1
upstreams:
  app: {{url: "{upstream}"}}
routes:
  - path: /{name}
    methods: [GET]
    forward: {{upstream: app, path: /echo/{name}}}
"""


def status(served: ServeProcess, path: str) -> int:
    try:
        return httpx.get(f"{served.url}{path}", timeout=2).status_code
    except httpx.HTTPError:
        return -1


def swapped(served: ServeProcess, old: str, new: str) -> bool:
    return served.wait_for(lambda: status(served, new) == 200 and status(served, old) == 404)


def save_in_place(path: Path, text: str) -> None:
    with path.open("r+") as handle:
        handle.seek(0)
        handle.write(text)
        handle.truncate()


def save_by_rename(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def save_by_delete_and_recreate(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text)


@pytest.mark.parametrize(
    "save", [save_in_place, save_by_rename, save_by_delete_and_recreate], ids=lambda f: f.__name__
)
def test_reload_picks_up_each_save_style(save: object, upstream_url: str, tmp_path: Path) -> None:
    """After a save, the new route serves and the old one is gone."""
    config = tmp_path / "routes.yaml"
    config.write_text(VERSION.format(upstream=upstream_url, name="before"))
    with serve_process(config) as served:
        assert status(served, "/before") == 200
        save(config, VERSION.format(upstream=upstream_url, name="after"))  # type: ignore[operator]
        assert swapped(served, "/before", "/after"), served.log_text()
        assert served.log_text().count("reloaded routes.yaml") == 1


def test_reload_follows_a_kubernetes_style_symlink_swap(upstream_url: str, tmp_path: Path) -> None:
    """A ConfigMap-style swap of the `..data` symlink to a new folder is picked up."""
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_12_04_v1"
    first.mkdir()
    (first / "routes.yaml").write_text(VERSION.format(upstream=upstream_url, name="one"))
    (mount / "..data").symlink_to(first.name)
    (mount / "routes.yaml").symlink_to("..data/routes.yaml")
    with serve_process(mount / "routes.yaml") as served:
        assert status(served, "/one") == 200
        second = mount / "..2026_12_04_v2"
        second.mkdir()
        (second / "routes.yaml").write_text(VERSION.format(upstream=upstream_url, name="two"))
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")
        assert swapped(served, "/one", "/two"), served.log_text()


def test_reload_rejects_invalid_edit_and_keeps_serving(upstream_url: str, tmp_path: Path) -> None:
    """An invalid edit is logged with its place; the old table serves; /-/table shows why."""
    config = tmp_path / "routes.yaml"
    config.write_text(VERSION.format(upstream=upstream_url, name="good"))
    with serve_process(config) as served:
        broken = VERSION.format(upstream=upstream_url, name="good").replace(
            "upstream: app", "upstream: ap"
        )
        save_by_rename(config, broken)
        assert served.wait_for(lambda: "rejected the edit" in served.log_text()), served.log_text()
        assert status(served, "/good") == 200
        table = httpx.get(f"{served.url}/-/table").json()
        assert table["last_reload"]["ok"] is False
        [error] = table["last_reload"]["errors"]
        assert error == (
            f"{config}:8:25: routes[0].forward.upstream: unknown upstream 'ap'; did you mean 'app'?"
        )
        assert error in served.log_text()
        save_by_rename(config, VERSION.format(upstream=upstream_url, name="fixed"))
        assert swapped(served, "/good", "/fixed"), served.log_text()
        assert httpx.get(f"{served.url}/-/table").json()["last_reload"]["ok"] is True


def test_reload_treats_an_empty_file_as_invalid(upstream_url: str, tmp_path: Path) -> None:
    """A truncated (empty) file is an invalid config, not an empty table."""
    config = tmp_path / "routes.yaml"
    config.write_text(VERSION.format(upstream=upstream_url, name="kept"))
    with serve_process(config) as served:
        save_in_place(config, "")
        assert served.wait_for(lambda: "rejected the edit" in served.log_text()), served.log_text()
        assert status(served, "/kept") == 200


def test_reload_on_sighup_with_watching_off(upstream_url: str, tmp_path: Path) -> None:
    """With --no-watch an edit does nothing until SIGHUP."""
    config = tmp_path / "routes.yaml"
    config.write_text(VERSION.format(upstream=upstream_url, name="first"))
    with serve_process(config, "--no-watch") as served:
        save_by_rename(config, VERSION.format(upstream=upstream_url, name="second"))
        assert not served.wait_for(lambda: status(served, "/second") == 200, timeout=1.0)
        served.process.send_signal(signal.SIGHUP)
        assert swapped(served, "/first", "/second"), served.log_text()


def test_reload_with_polling(upstream_url: str, tmp_path: Path) -> None:
    """--poll finds edits on mounts that deliver no file events."""
    config = tmp_path / "routes.yaml"
    config.write_text(VERSION.format(upstream=upstream_url, name="p1"))
    with serve_process(config, "--poll") as served:
        save_by_rename(config, VERSION.format(upstream=upstream_url, name="p2"))
        assert swapped(served, "/p1", "/p2"), served.log_text()


def test_reload_watches_referenced_schema_files(upstream_url: str, tmp_path: Path) -> None:
    """Editing a schema file that routes.yaml references reloads the table."""
    (tmp_path / "body.schema.json").write_text('{"type": "object"}')
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"""
version: 1
upstreams:
  app: {{url: "{upstream_url}"}}
routes:
  - path: /in
    methods: [POST]
    body_schema: body.schema.json
    deliver: {{upstream: app}}
"""
    )
    with serve_process(config) as served:
        assert httpx.post(f"{served.url}/in", json=[1]).status_code == 422
        save_by_rename(tmp_path / "body.schema.json", '{"type": "array"}')
        assert served.wait_for(
            lambda: httpx.post(f"{served.url}/in", json=[1]).status_code == 202
        ), served.log_text()
