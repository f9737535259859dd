"""Dockerfiles, checked without a Docker engine: pinned, non-root, the right entry points and extras.

The strongest check: every third-party module that the programs of an image import (at any depth, also
inside functions) is provided by the extras that image installs (the closure of their requirements,
from installed metadata), and every module of ours they import is copied in.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Image:
    extras: frozenset[str]
    script: str
    code: tuple[str, ...]  # what the Dockerfile copies in


IMAGES = {
    "Dockerfile.fetcher": Image(frozenset({"fetcher"}), "modelcache-fetch", ("modelcache", "fetcher")),
    "Dockerfile.webhook": Image(
        frozenset({"webhook", "certs"}), "modelcache-webhook", ("modelcache", "webhook", "certs")
    ),
}
# Programs each image runs (their modules), and modules they import only for work that image does not
# do: the webhook image runs the cache agent and purge, but never downloads (modelcache.cli.localfetch);
# the fetcher image runs the fetcher and the `modelcache` command's work on a volume (prefetch, refresh,
# verify --repair, ls, verify, prepare), but asks no cluster (the Kubernetes client, the agent).
# tests/images/ runs every one of them in the built images.
PROGRAMS = {
    "Dockerfile.fetcher": (
        ("fetcher.__main__", "modelcache.cli.main"),
        ("modelcache.runtime.kube", "modelcache.agent.__main__"),
    ),
    "Dockerfile.webhook": (
        (
            "webhook.__main__",
            "modelcache.controller.__main__",
            "certs.__main__",
            "modelcache.cli.main",
            "modelcache.agent.__main__",
        ),
        ("modelcache.cli.localfetch",),
    ),
}


def instructions(name: str) -> list[tuple[str, str]]:
    text = (ROOT / name).read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(" ", 1)[0].upper(), line.split(" ", 1)[1]) for line in lines]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_bases_are_pinned_to_an_exact_python_release(name: str) -> None:
    bases = [arg.split()[0] for op, arg in instructions(name) if op == "FROM"]
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", base), base
        assert f"{sys.version_info.major}.{sys.version_info.minor}" in base  # the Python we test with


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_image_runs_as_a_numeric_non_root_user_in_group_0(name: str) -> None:
    users = [arg for op, arg in instructions(name) if op == "USER"]
    assert users
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid == "0"  # OpenShift's arbitrary UIDs run with group 0


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_entry_point_is_a_declared_console_script_of_the_image_package(name: str) -> None:
    entry = [arg for op, arg in instructions(name) if op == "ENTRYPOINT"][-1]
    script = IMAGES[name].script
    assert entry == f'["{script}"]'
    module = PYPROJECT["project"]["scripts"][script].split(":")[0]
    assert module.split(".")[0] in str(IMAGES[name].code)
    assert metadata.entry_points(group="console_scripts", name=script)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_install_is_constrained_to_the_pinned_versions_with_only_its_extras(name: str) -> None:
    runs = " ".join(arg for op, arg in instructions(name) if op == "RUN")
    assert "--constraint constraints.txt" in runs
    extras = re.search(r'"\.\[([a-z,]+)\]"', runs)
    assert extras is not None
    assert set(extras.group(1).split(",")) == IMAGES[name].extras
    copied = " ".join(arg for op, arg in instructions(name) if op == "COPY" and "--from" not in arg)
    for path in IMAGES[name].code:
        assert path in copied


def closure(extras: frozenset[str]) -> set[str]:
    """Normalized names of every distribution `modelcache[extras]` installs."""
    pending = [
        Requirement(r)
        for r in metadata.requires("modelcache") or []
        if Requirement(r).marker is None or any(Requirement(r).marker.evaluate({"extra": e}) for e in extras)  # type: ignore[union-attr]
    ]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in seen or name == "modelcache":
            continue
        seen.add(name)
        for raw in metadata.requires(requirement.name) or []:
            nested = Requirement(raw)
            if nested.marker is None or any(nested.marker.evaluate({"extra": e}) for e in requirement.extras or {""}):
                pending.append(nested)
    return seen


def module_file(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if (base / "__init__.py").exists() else base.with_suffix(".py")


def third_party_imports(modules_of_ours: set[str]) -> set[str]:
    """Third-party top-level modules these modules of ours import (fallbacks under ImportError aside)."""
    modules: set[str] = set()
    files = [module_file(m) for m in sorted(modules_of_ours) if module_file(m).exists()]
    for file in files:
        tree = ast.parse(file.read_text())
        optional = {  # imports under `try: ... except ImportError:` have a fallback
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.Try)
            and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers
            )
            for statement in node.body
            for inner in ast.walk(statement)
        }
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    ours = {"modelcache", "webhook", "fetcher", "certs"}
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ours}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_extras_provide_every_module_the_image_programs_import(name: str) -> None:
    provided = closure(IMAGES[name].extras)
    owners = metadata.packages_distributions()
    for module in sorted(third_party_imports(our_modules(*PROGRAMS[name]))):
        distributions = {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(module, [])}
        assert distributions & provided, (
            f"{name}: {module} ({distributions}) is not installed by {sorted(IMAGES[name].extras)}"
        )


def our_modules(start: tuple[str, ...], outside: tuple[str, ...]) -> set[str]:
    """Our modules `start` imports, at any depth and in any function, except through `outside`."""
    ours = {"modelcache", "webhook", "fetcher", "certs"}
    seen: set[str] = set()
    pending = list(start)
    while pending:
        module = pending.pop()
        file = module_file(module)
        if module in seen or module in outside or not file.exists():
            continue
        seen.add(module)
        for node in ast.walk(ast.parse(file.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            for name in (n for n in names if n.split(".")[0] in ours):
                parts = name.split(".")
                pending.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
    return seen


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_every_module_of_ours_the_image_programs_import_is_copied_in(name: str) -> None:
    start, outside = PROGRAMS[name]
    copied = IMAGES[name].code
    for module in sorted(our_modules(start, outside)):
        path = module.replace(".", "/")
        inside = any(path == c.removesuffix(".py") or path.startswith(c + "/") for c in copied)
        package = any(c.startswith(path + "/__init__") or c == path for c in copied)
        assert inside or package, f"{name} runs {module}, which it does not copy in"


def test_the_build_context_leaves_out_what_images_do_not_need() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests", "bench", "devtools"):
        assert entry in ignored
