"""What each built image holds: only programs that run there, no installer in the runtime, one layer of ours."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.images.kubelet import FETCHER, ROOT, WEBHOOK, podman, restricted

pytestmark = pytest.mark.usefixtures("images")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The console scripts each image ships; every other one of ours cannot run there and must not be present.
SCRIPTS = {
    FETCHER: {"modelcache", "modelcache-fetch"},
    WEBHOOK: {"modelcache", "modelcache-webhook", "modelcache-controller"},
}
MODULES = {FETCHER: ["fetcher"], WEBHOOK: ["webhook", "certs", "modelcache.agent"]}  # `python -m` entry points
VENV = "/opt/modelcache"


def in_image(image: str, *command: str) -> str:
    result = restricted(image, *command[1:], extra=["--entrypoint", command[0]])
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("image", sorted(SCRIPTS))
def test_every_console_script_in_the_image_starts_and_none_that_cannot_run_is_there(image: str) -> None:
    present = set(in_image(image, "ls", f"{VENV}/bin").split())
    interpreters = {name for name in present if re.fullmatch(r"python(3(\.\d+)?)?", name)}
    assert present - interpreters == SCRIPTS[image]
    assert SCRIPTS[image] <= set(PYPROJECT["project"]["scripts"])
    for script in sorted(SCRIPTS[image]):
        result = restricted(image, "--help", extra=["--entrypoint", script])
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert result.stdout.startswith("usage:"), f"{script}: {result.stdout[:200]}"


@pytest.mark.parametrize(("image", "module"), [(i, m) for i, ms in sorted(MODULES.items()) for m in ms])
def test_every_python_m_entry_point_the_manifests_and_docs_use_starts(image: str, module: str) -> None:
    assert in_image(image, "python", "-m", module, "--help").startswith("usage:")


INSTALLERS = """
import importlib.util, json, pathlib, sys
site = pathlib.Path(sys.prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
wheel = next(site.glob("modelcache-*.dist-info")) / "WHEEL"
print(json.dumps({
    "prefix": sys.prefix,
    "installers": [m for m in ("pip", "setuptools", "wheel", "_distutils_hack") if importlib.util.find_spec(m)],
    "pth": sorted(p.name for p in site.glob("*.pth")),
    "generator": next(line for line in wheel.read_text().splitlines() if line.startswith("Generator:")),
}))
"""


@pytest.mark.parametrize("image", sorted(SCRIPTS))
def test_the_runtime_has_no_installer_and_was_built_by_the_pinned_backend(image: str) -> None:
    found = json.loads(in_image(image, "python", "-c", INSTALLERS))
    assert found["prefix"] == VENV
    assert found["installers"] == []  # pip, setuptools and wheel stayed in the build stage
    assert found["pth"] == []  # no start-up hook such as setuptools' distutils-precedence.pth
    (pin,) = (r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert found["generator"] == f"Generator: setuptools ({pin.removeprefix('setuptools==')})"


@pytest.mark.parametrize("image", sorted(SCRIPTS))
def test_the_image_adds_one_layer_to_its_base_and_runs_as_non_root(image: str) -> None:
    base = ROOT.joinpath("Dockerfile.fetcher").read_text().split("FROM ", 1)[1].split()[0]
    layers = json.loads(podman("inspect", "--format", "{{json .RootFS.Layers}}", image).stdout)
    base_layers = json.loads(podman("inspect", "--format", "{{json .RootFS.Layers}}", base).stdout)
    assert layers[: len(base_layers)] == base_layers
    assert len(layers) == len(base_layers) + 1
    user = podman("inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert re.fullmatch(r"[1-9]\d*:0", user), user
