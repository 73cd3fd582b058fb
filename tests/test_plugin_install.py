"""Real `pip install` of small plugin distributions into a virtual environment:
installing makes a provider appear after a restart, uninstalling removes it, a
plugin whose import raises is reported while the rest serve, and two plugins
claiming one id stop startup with an error naming both distributions."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTS = Path(__file__).parent / "dists"

PROBE = """
import json, os, sys, tempfile
from fastapi.testclient import TestClient
from hub.api.main import create_app
from hub.config import Settings
from hub.plugins import DuplicateProviderError
data = tempfile.mkdtemp()
try:
    app = create_app(Settings(data_dir=data, secret_key="x"))
except DuplicateProviderError as exc:
    print(json.dumps({"startup_error": str(exc)}))
    sys.exit(0)
with TestClient(app) as client:
    from hub.services.orgs import create_organization
    with app.state.hub.session() as session:
        _org, key = create_organization(session, "probe")
    providers = client.get("/api/v1/integrations/providers").json()["providers"]
    plugins = client.get("/api/v1/integrations/plugins", headers={"Authorization": f"Bearer {key}"}).json()["plugins"]
print(json.dumps({"providers": [p["name"] for p in providers], "plugins": plugins}))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtual environment with the hub core installed by pip from this
    checkout (dependencies come from the package index or pip's cache)."""
    path = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    pip(python, "install", str(ROOT))
    return python


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True,
                   capture_output=True)


def probe(python: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    out = subprocess.run([str(python), "-c", PROBE], check=True, capture_output=True, text=True, env=env,
                         cwd=str(ROOT.parent)).stdout
    return json.loads(out.strip().splitlines()[-1])


def hub_plugins_cli(python: Path) -> str:
    """``hub plugins`` of a venv where a plugin failed to load: it says so, and exits 1 (for scripts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    listed = subprocess.run([str(python), "-m", "hub.cli", "plugins"], capture_output=True, text=True, env=env)
    assert listed.returncode == 1, listed.stdout + listed.stderr
    return listed.stdout


def test_install_uninstall_and_broken_plugins(venv):
    before = probe(venv)
    assert "example" not in before["providers"]

    pip(venv, "install", "--no-deps", str(ROOT / "tests" / "example_provider"),
        str(DISTS / "hub-broken"))
    after = probe(venv)
    assert "example" in after["providers"]
    broken = next(p for p in after["plugins"] if p["name"] == "broken")
    assert broken["loaded"] is False and "frobnicate" in broken["error"]
    assert broken["distribution"] == "hub-broken"
    example = next(p for p in after["plugins"] if p["name"] == "example")
    assert example["distribution"] == "hub-example" and example["version"] == "0.1.0"
    listing = hub_plugins_cli(venv)
    assert "FAILED" in listing and "frobnicate" in listing and "hub-example" in listing

    # Made for an older core (pip only warns, as after `pip install -U hub-core`): listed, not loaded.
    pip(venv, "install", "--no-deps", str(DISTS / "hub-older-core"))
    mismatched = probe(venv)
    assert "older" not in mismatched["providers"] and "example" in mismatched["providers"]
    older = next(p for p in mismatched["plugins"] if p["name"] == "older")
    assert older["loaded"] is False and older["distribution"] == "hub-older-core", older
    assert "made for hub-core<0.1" in older["error"] and "this hub is hub-core 0.1.0" in older["error"], older
    assert "made for hub-core<0.1" in hub_plugins_cli(venv)
    pip(venv, "uninstall", "-y", "hub-older-core")

    pip(venv, "install", "--no-deps", str(DISTS / "hub-example-clone"))
    clash = probe(venv)
    assert "hub-example-clone" in clash["startup_error"]
    assert re.search(r"hub-example(?!-clone)", clash["startup_error"])
    assert "pip uninstall hub-example-clone" in clash["startup_error"]
    # The diagnostic listing still lists both; commands that need the hub say why they stop, without a traceback.
    listing = hub_plugins_cli(venv)
    assert re.search(r"^example .*FAILED: provider id 'example' is claimed by two plugins", listing, re.M), listing
    assert "hub-example-clone" in listing and re.search(r"^example +hub-example ", listing, re.M), listing
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    refused = subprocess.run([str(venv), "-m", "hub.cli", "org", "create", "acme"], capture_output=True, text=True,
                             env={**env, "HUB_DATA_DIR": str(venv.parent.parent / "clash-data")})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "\nError: provider id 'example' is claimed by two plugins" in refused.stderr, refused.stderr
    pip(venv, "uninstall", "-y", "hub-example-clone")

    pip(venv, "uninstall", "-y", "hub-example")
    gone = probe(venv)
    assert "example" not in gone["providers"]
    assert any(p["name"] == "broken" for p in gone["plugins"])
