"""Pod Security Standards "restricted" and OpenShift restricted-v2 checks for one container.

Mirrors the checks of k8s.io/pod-security-admission (policy/check_*.go) at version 1.30 that apply to
a container and the volumes it mounts, plus what OpenShift's restricted-v2 SCC adds: no fixed UID.
"""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """Why `container` of `pod` would be refused in a namespace enforcing "restricted" (empty: it passes)."""
    problems: list[str] = []
    pod_sc = pod["spec"].get("securityContext", {})
    sc = container.get("securityContext", {})
    if sc.get("privileged"):
        problems.append("privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation != false")
    caps = sc.get("capabilities", {})
    if "ALL" not in caps.get("drop", []):
        problems.append("capabilities.drop does not include ALL")
    if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("capabilities.add beyond NET_BIND_SERVICE")
    if sc.get("runAsNonRoot") is False or (
        sc.get("runAsNonRoot") is not True and pod_sc.get("runAsNonRoot") is not True
    ):
        problems.append("runAsNonRoot != true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        problems.append("runAsUser=0")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"seccompProfile.type={seccomp}")
    if container.get("ports") and any(p.get("hostPort") for p in container["ports"]):
        problems.append("hostPort")
    if sc.get("procMount", "Default") != "Default":
        problems.append("procMount")
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            problems.append(f"volumeMount {mount['name']} has no volume")
            continue
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {mount['name']} of type {sorted(kinds)}")
    return problems


def openshift_restricted_v2_violations(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """restricted-v2 assigns the UID from the namespace's range: a fixed runAsUser is refused."""
    problems = restricted_violations(pod, container)
    pod_runs_as_root = pod["spec"].get("securityContext", {}).get("runAsUser") == 0
    if "runAsUser" in container.get("securityContext", {}) and not pod_runs_as_root:
        problems.append("runAsUser is fixed (OpenShift assigns one)")
    return problems
