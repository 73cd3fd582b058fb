"""The plugin template renders a provider package that works as rendered:
its own conformance tests pass, in this environment and, installed by pip, in
a fresh virtual environment where a hub then serves the new provider."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from hub.cli import main
from hub.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
HOOKS_TO_FILL = {
    "api_key": {"entity_schemas", "request_auth", "describe_error", "test_connection", "list_records",
                "get_record", "verify_webhook"},
    "oauth2": {"entity_schemas", "authorization_url", "exchange_code", "request_auth", "describe_error",
               "test_connection", "list_records", "get_record", "verify_webhook"},
}


def new_plugin(tmp_path: Path, name: str, auth_type: str, **options: str) -> Path:
    args = ["new-plugin", name, "--label", options.get("label", name.title()), "--category",
            options.get("category", "crm"), "--auth-type", auth_type, "--output-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    path = tmp_path / f"hub-{name.replace('_', '-')}"
    assert f"created {path}" in result.output
    return path


def install_entry_point(site: Path, name: str) -> None:
    """What pip leaves for the entry point: a dist-info with entry_points.txt."""
    info = site / f"hub_{name}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: hub-{name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[hub.providers]\n{name} = hub_{name}\n")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "PYTEST_", "PYTHONPATH"))}
    return {**env, **extra}


@pytest.mark.parametrize("auth_type", ["api_key", "oauth2"])
def test_new_plugin_renders_a_package_with_every_hook_to_fill_marked(tmp_path, auth_type):
    path = new_plugin(tmp_path, "acme_crm", auth_type, label='Acme "CRM"', category="crm")
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == [
        "README.md", "hub_acme_crm/__init__.py", "hub_acme_crm/testing.py", "pyproject.toml",
        "tests/test_acme_crm_conformance.py"]
    pyproject = (path / "pyproject.toml").read_text()
    assert 'name = "hub-acme-crm"' in pyproject
    assert '[project.entry-points."hub.providers"]\nacme_crm = "hub_acme_crm"' in pyproject
    source = (path / "hub_acme_crm" / "__init__.py").read_text()
    module = ast.parse(source)
    lines = source.splitlines()
    hooks = {node.name: node for node in module.body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.decorator_list}
    assert HOOKS_TO_FILL[auth_type] <= set(hooks)
    for name in HOOKS_TO_FILL[auth_type]:
        above = lines[hooks[name].decorator_list[0].lineno - 4:hooks[name].decorator_list[0].lineno - 1]
        assert any("TODO(author)" in line for line in above), f"{name} has no TODO(author) above it"
    assert 'label="Acme \\"CRM\\""' in source and 'auth_type="' + auth_type + '"' in source
    assert "TODO(author)" in (path / "hub_acme_crm" / "testing.py").read_text()


def test_new_plugin_prompts_and_refuses_bad_answers(tmp_path, monkeypatch):
    # Not at a terminal (a script, CI), what is not given takes its default.
    quiet = CliRunner().invoke(main, ["new-plugin", "foo_bar", "--output-dir", str(tmp_path)])
    assert quiet.exit_code == 0, quiet.output
    source = (tmp_path / "hub-foo-bar" / "hub_foo_bar" / "__init__.py").read_text()
    assert 'label="Foo Bar"' in source and 'category="productivity"' in source and 'auth_type="api_key"' in source
    monkeypatch.setattr("hub.cli._interactive", lambda: True)
    prompted = CliRunner().invoke(main, ["new-plugin", "shop", "--output-dir", str(tmp_path)],
                                  input="Shop Co\ncommerce\noauth2\n")
    assert prompted.exit_code == 0, prompted.output
    assert "Label (display name)" in prompted.output and "Auth type" in prompted.output
    source = (tmp_path / "hub-shop" / "hub_shop" / "__init__.py").read_text()
    assert 'label="Shop Co"' in source and 'category="commerce"' in source and "def exchange_code" in source
    again = CliRunner().invoke(main, ["new-plugin", "shop", "--label", "x", "--category", "crm", "--auth-type",
                                      "api_key", "--output-dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = CliRunner().invoke(main, ["new-plugin", "Shop-2", "--label", "x", "--category", "crm", "--auth-type",
                                    "api_key", "--output-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "use lower case letters" in bad.output
    # hub-core is the hub: a plugin package of that name would uninstall it when installed; so would
    # one named after a bundled plugin (each of them: xero and the others were missing).
    plugins = Path(__file__).resolve().parent.parent / "plugins"
    bundled = {path.parent.name for path in plugins.glob("*/pyproject.toml")}
    assert {"stripe", "xero", "hubspot"} <= bundled
    for taken in ("core", *sorted(bundled)):
        refused = CliRunner().invoke(main, ["new-plugin", taken, "--label", "x", "--category", "crm", "--auth-type",
                                            "api_key", "--output-dir", str(tmp_path)])
        assert refused.exit_code == 2 and "would replace it" in refused.output
        assert not (tmp_path / f"hub-{taken}").exists()


@pytest.mark.parametrize("auth_type", ["api_key", "oauth2"])
def test_rendered_plugin_passes_its_tests_and_loads_in_this_environment(tmp_path, auth_type):
    path = new_plugin(tmp_path, "acme", auth_type)
    site = tmp_path / "site"
    install_entry_point(site, "acme")
    env = clean_env(PYTHONPATH=f"{site}{os.pathsep}{path}")
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert re.search(r"\b2[0-9] passed", tests.stdout), tests.stdout
    listed = subprocess.run([sys.executable, "-m", "hub.cli", "plugins", "--json"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=True)
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["acme"]["loaded"] and plugins["acme"]["entities"] == ["contacts", "users"]


@pytest.fixture
def source_tree(tmp_path_factory) -> Path:
    """A copy of the core's sources, so that pip builds outside the work tree."""
    tree = tmp_path_factory.mktemp("hub-core-src")
    shutil.copy(ROOT / "pyproject.toml", tree)
    for extra in ("README.md",):
        if (ROOT / extra).exists():
            shutil.copy(ROOT / extra, tree)
    shutil.copytree(ROOT / "hub", tree / "hub", ignore=shutil.ignore_patterns("__pycache__"))
    return tree


@pytest.mark.slow  # (45 s of pip into a new venv: run with `pytest -m slow`; the suite keeps .ci/run in time)
def test_rendered_plugin_installs_tests_and_serves_in_a_fresh_venv(tmp_path, source_tree):
    started = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", str(source_tree)], check=True, capture_output=True, timeout=600)
    env = clean_env(HUB_DATA_DIR=str(tmp_path / "data"))
    # Each kind of plugin installs with only what its pyproject declares, and passes its own tests.
    for name, label, auth_type in (("acme", "Acme CRM", "api_key"), ("oa", "OA", "oauth2")):
        rendered = subprocess.run([str(bin_dir / "hub"), "new-plugin", name, "--label", label, "--category",
                                   "crm", "--auth-type", auth_type, "--output-dir", str(tmp_path)],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert rendered.returncode == 0, rendered.stderr
        package = tmp_path / f"hub-{name}"
        subprocess.run([*pip, "install", f"{package}[test]"], check=True, capture_output=True, timeout=600)
        tests = subprocess.run([str(bin_dir / "pytest"), "-q", "-p", "no:cacheprovider"], cwd=package, env=env,
                               capture_output=True, text=True, timeout=300)
        assert tests.returncode == 0 and " passed" in tests.stdout, auth_type + tests.stdout + tests.stderr

    port = free_port()
    server = subprocess.Popen([str(bin_dir / "hub"), "serve", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        providers = _wait_for_providers(f"http://127.0.0.1:{port}/api/v1/integrations/providers", server)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sorted(p["name"] for p in providers) == ["acme", "oa"]
    acme = next(p for p in providers if p["name"] == "acme")
    assert acme["label"] == "Acme CRM" and acme["entities"] == ["contacts", "users"]
    print(f"fresh venv, install, render, test and serve: {time.monotonic() - started:.1f}s")


def _wait_for_providers(url: str, server: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"hub serve exited: {server.stdout.read()}")
        try:
            return httpx.get(url, timeout=5).json()["providers"]
        except httpx.HTTPError:
            time.sleep(0.2)
    pytest.fail("hub serve did not answer within 60 s")
