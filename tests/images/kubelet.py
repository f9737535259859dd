"""Run the shipped images with podman the way a kubelet runs a pod's containers, and build them first.

A container of a pod spec becomes one `podman run`: its env (values and the downward API fields), its
volume mounts (a PersistentVolumeClaim and every emptyDir are host directories, mode 0777 as a
kubelet's emptyDir), its securityContext (read-only root, capabilities, no privilege escalation, the
user: an arbitrary UID with group 0 unless the spec names one, as OpenShift assigns), its resource
limits, and a writable file at its terminationMessagePath. A field the translation does not know fails
the test: a new field the webhook injects must be run here too, never skipped.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcache.contract import JsonObject
from modelcache.contract.quantities import quantity

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("MODELCACHE_TEST_IMAGE_TAG", "test")
FETCHER = f"localhost/modelcache-fetcher:{TAG}"
WEBHOOK = f"localhost/modelcache-webhook:{TAG}"
ARBITRARY_UID = 1000680000  # what OpenShift's restricted-v2 assigns: any UID, group 0
RESTRICTED = ["--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]

_CONTAINER_FIELDS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "resources",
    "securityContext",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "volumeMounts",
    "ports",
    "envFrom",
    "lifecycle",  # preStop: podman stop sends SIGTERM at once
    "livenessProbe",  # probes: the tests ask the same endpoints themselves
    "readinessProbe",
    "startupProbe",
}
_SECURITY_FIELDS = {
    "allowPrivilegeEscalation",
    "capabilities",
    "privileged",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "seccompProfile",
}


@functools.cache
def podman_problem() -> str | None:
    """Why podman cannot build here, or None. `. ../shared/tools/oci/env.sh` first in this sandbox."""
    if shutil.which("podman") is None:
        return "podman is not installed (on this sandbox: ../shared/tools/oci/setup.sh, then . env.sh)"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=120, check=False)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-300:]}"
    for base in sorted(bases()):
        if podman("image", "exists", base, check=False).returncode == 0:
            continue
        pulled = podman("pull", "--quiet", base, check=False, timeout=1800)
        if pulled.returncode != 0:
            why = (pulled.stderr.strip().splitlines() or ["no message"])[-1][:300]
            return (
                f"podman has no {base} and cannot pull it ({why}); without a registry, "
                "../shared/tools/oci/base.sh makes a local stand-in"
            )
    return None


def bases() -> set[str]:
    """The images the Dockerfiles build FROM."""
    found = set()
    for dockerfile in ("Dockerfile.fetcher", "Dockerfile.webhook"):
        for line in (ROOT / dockerfile).read_text().splitlines():
            if line.upper().startswith("FROM "):
                found.add(line.split()[1])
    return found


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stderr[-3000:]}")
    return result


def build_images() -> None:
    """`make images`, as a user runs it: both Dockerfiles, tagged TAG."""
    result = subprocess.run(
        ["make", "-s", "images", f"IMAGE_TAG={TAG}", f"OCI={shutil.which('podman')}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def restricted(image: str, *args: str, uid: int = ARBITRARY_UID, network: str = "host", **kw: Any) -> Completed:
    """One command in an image as a restricted pod's container runs (loopback servers reachable)."""
    run_args = ["--rm", *RESTRICTED, "--user", f"{uid}:0", "--network", network, *kw.pop("extra", ())]
    return Completed.of(podman("run", *run_args, image, *args, check=False, timeout=kw.pop("timeout", 300)))


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str
    termination_message: str = ""

    @classmethod
    def of(cls, result: subprocess.CompletedProcess[str], message: str = "") -> Completed:
        return cls(result.returncode, result.stdout, result.stderr, message)


@dataclass
class Kubelet:
    """One pod's containers on this machine: volumes under `root`, claims bound to host directories."""

    pod: JsonObject
    root: Path
    claims: Mapping[str, Path] = field(default_factory=dict)
    secrets: Mapping[str, Path] = field(default_factory=dict)  # Secret name -> directory of its keys
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # for envFrom
    host_paths: Mapping[str, Path] = field(default_factory=dict)  # a hostPath volume's path -> this host's directory
    # The API stand-in speaks HTTP on loopback, so the service account's credentials come as a kubeconfig.
    kubeconfig: Path | None = None
    uid: int = ARBITRARY_UID
    node: str = "node-a"
    uid_of_pod: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        metadata = self.pod["metadata"]
        self.name = metadata.get("name") or metadata.get("generateName", "pod-") + uuid.uuid4().hex[:5]
        self.namespace = metadata.get("namespace", "serving")

    def container(self, name: str) -> JsonObject:
        spec = self.pod["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if container["name"] == name:
                found: JsonObject = container
                return found
        raise AssertionError(f"the pod has no container {name!r}")

    def run(self, name: str, *, network: str = "host", timeout: float = 300) -> Completed:
        """The container to its end: its exit status, logs and termination message."""
        container = self.container(name)
        message = self._termination_file(container)
        result = podman("run", "--rm", *self.arguments(container, network=network), check=False, timeout=timeout)
        return Completed.of(result, message.read_text() if message else "")

    @contextmanager
    def started(self, name: str, *, network: str = "host") -> Iterator[Running]:
        """The container in the background (for signals); removed afterwards."""
        container = self.container(name)
        message = self._termination_file(container)
        handle = f"mc-{uuid.uuid4().hex[:12]}"
        podman("run", "-d", "--name", handle, *self.arguments(container, network=network))
        try:
            yield Running(handle, message)
        finally:
            podman("rm", "--force", "--time", "0", handle, check=False)

    def arguments(self, container: JsonObject, *, network: str) -> list[str]:
        unknown = set(container) - _CONTAINER_FIELDS
        assert not unknown, f"container {container['name']}: fields this kubelet does not run: {sorted(unknown)}"
        args = ["--network", network, "--pull", "never", "--hostname", self.name]
        args += self._security(container)
        args += self._resources(container.get("resources", {}))
        args += self._config_maps(container.get("envFrom", []))
        args += self._environment(container.get("env", []))  # after envFrom: env wins, as in Kubernetes
        args += self._mounts(container)
        if self.kubeconfig and self.pod["spec"].get("automountServiceAccountToken", True):
            args += ["-v", f"{self.kubeconfig}:/var/run/modelcache/kubeconfig:ro"]
            args += ["--env", "KUBECONFIG=/var/run/modelcache/kubeconfig"]
        message = self._termination_path(container)
        if message:
            args += ["-v", f"{message}:{container.get('terminationMessagePath', '/dev/termination-log')}"]
        if container.get("command"):
            args += ["--entrypoint", json.dumps(container["command"])]
        return [*args, container["image"], *container.get("args", [])]

    def _security(self, container: JsonObject) -> list[str]:
        pod_level = self.pod["spec"].get("securityContext", {})
        context = {**pod_level, **container.get("securityContext", {})}
        unknown = set(container.get("securityContext", {})) - _SECURITY_FIELDS
        assert not unknown, f"securityContext fields this kubelet does not run: {sorted(unknown)}"
        assert not context.get("privileged"), "a privileged container"
        args = ["--user", f"{context.get('runAsUser', self.uid)}:{context.get('runAsGroup', 0)}"]
        if context.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]  # no tmpfs a kubelet would not mount
        if context.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        dropped = context.get("capabilities", {}).get("drop", [])
        args += [item for capability in dropped for item in ("--cap-drop", capability)]
        added = context.get("capabilities", {}).get("add", [])
        args += [item for capability in added for item in ("--cap-add", capability)]
        profile = context.get("seccompProfile", {}).get("type", "RuntimeDefault")
        assert profile == "RuntimeDefault", f"seccomp profile {profile}"  # podman's default profile
        return args

    @staticmethod
    def _resources(resources: JsonObject) -> list[str]:
        limits = resources.get("limits", {})
        args = []
        if "cpu" in limits:
            args += ["--cpus", f"{float(quantity(str(limits['cpu']))):g}"]
        if "memory" in limits:
            args += ["--memory", f"{int(quantity(str(limits['memory'])))}b"]
        return args

    def _config_maps(self, sources: list[JsonObject]) -> list[str]:
        args = []
        for source in sources:
            if "secretRef" in source:  # the keys of a Secret directory; an optional one that is missing adds none
                reference = source["secretRef"]
                if reference["name"] not in self.secrets and reference.get("optional"):
                    continue
                keys = sorted(Path(self.secrets[reference["name"]]).iterdir())
                args += [item for key in keys for item in ("--env", f"{key.name}={key.read_text()}")]
                continue
            assert set(source) == {"configMapRef"}, f"envFrom {source}: this kubelet reads ConfigMaps and Secrets"
            data = self.config_maps[source["configMapRef"]["name"]]
            args += [item for name, value in data.items() for item in ("--env", f"{name}={value}")]
        return args

    def _environment(self, env: list[JsonObject]) -> list[str]:
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid_of_pod,
            "spec.nodeName": self.node,
        }
        args = []
        for item in env:
            if "value" in item:
                value = item["value"]
            else:
                reference = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                assert reference in fields, f"env {item['name']}: this kubelet cannot resolve {item}"
                value = fields[reference]
            args += ["--env", f"{item['name']}={value}"]
        return args

    def _mounts(self, container: JsonObject) -> list[str]:
        volumes = {volume["name"]: volume for volume in self.pod["spec"].get("volumes", [])}
        args = []
        for mount in container.get("volumeMounts", []):
            host = self.volume(volumes[mount["name"]]) / mount.get("subPath", "")
            options = ":ro" if mount.get("readOnly") else ""
            args += ["-v", f"{host}:{mount['mountPath']}{options}"]
        return args

    def volume(self, volume: JsonObject) -> Path:
        if "persistentVolumeClaim" in volume:
            return Path(self.claims[volume["persistentVolumeClaim"]["claimName"]])
        if "secret" in volume:
            return Path(self.secrets[volume["secret"]["secretName"]])
        if "hostPath" in volume:  # DirectoryOrCreate as the kubelet makes it: owned by root, mode 0755
            assert volume["hostPath"].get("type") == "DirectoryOrCreate", f"volume {volume['name']}: {volume}"
            host = Path(self.host_paths[volume["hostPath"]["path"]])
            if not host.exists():
                host.mkdir(parents=True, mode=0o755)
            return host
        assert "emptyDir" in volume, (
            f"volume {volume['name']}: this kubelet runs PVCs, Secrets, hostPaths and emptyDirs"
        )
        directory: Path = self.root / "emptydirs" / str(volume["name"])
        if not directory.exists():
            directory.mkdir(parents=True)
            directory.chmod(0o777)
        return directory

    def _termination_path(self, container: JsonObject) -> Path | None:
        path: Path = self.root / "termination" / str(container["name"])
        return path if path.exists() else None

    def _termination_file(self, container: JsonObject) -> Path:
        path: Path = self.root / "termination" / str(container["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        path.chmod(0o666)
        return path


@dataclass(frozen=True)
class Running:
    handle: str
    message: Path

    def logs(self) -> str:
        result = podman("logs", self.handle, check=False)
        return result.stdout + result.stderr

    def stop(self, *, grace: int) -> tuple[int, float]:
        """SIGTERM, then SIGKILL after `grace` s as the kubelet does: the exit status and the seconds taken."""
        started = time.monotonic()
        podman("stop", "--time", str(grace), self.handle, timeout=grace + 60)
        seconds = time.monotonic() - started
        status = podman("inspect", "--format", "{{.State.ExitCode}}", self.handle)
        return int(status.stdout.strip()), seconds

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.handle, check=False)
        return state.stdout.strip() == "true"
