"""plan_volumes, table by table: what each mode creates, reports and refuses, with the messages users see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest

from modelcache.contract.volumes import VolumeDeniedError, VolumeStatus
from modelcache.controller.config import ControllerSettings
from modelcache.controller.volumes import (
    CACHE_SOURCE_LABEL,
    Action,
    Claim,
    Observed,
    clone_volume_name,
    plan_volumes,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NFS_CLASS = {"metadata": {"name": "nfs-client"}, "provisioner": "cluster.local/nfs-subdir-external-provisioner"}
EBS_CLASS = {"metadata": {"name": "gp3"}, "provisioner": "ebs.csi.aws.com"}


def claim(
    namespace: str, *, phase: str = "Bound", modes: tuple[str, ...] = ("ReadWriteMany",), age: float = 10
) -> Claim:
    return Claim(
        namespace=namespace,
        name="modelcache",
        phase=phase,
        access_modes=modes,
        volume_name="pvc-source" if phase == "Bound" else "",
        created=NOW - timedelta(seconds=age),
        deleting=False,
    )


def volume(name: str, **source: Any) -> dict[str, Any]:
    spec = {"capacity": {"storage": "300Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "nfs-client"}
    return {
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": "nfs"}},
        "spec": spec | source,
    }


def settings(mode: str, **overrides: Any) -> ControllerSettings:
    storage = {} if mode == "existing" else {"storage_class": "nfs-client"}
    return ControllerSettings(volume_mode=mode, identity="test", **storage | overrides)  # type: ignore[arg-type]


def created(actions: tuple[Action, ...], kind: str) -> list[dict[str, Any]]:
    bodies = [a.body for a in actions if a.verb == "create" and a.kind == kind and a.body is not None]
    for body in bodies:
        kubernetes_validate.validate(body, "1.30.0", strict=True)
    return bodies


def denial(status: VolumeStatus, namespace: str, *, now: datetime = NOW) -> str:
    with pytest.raises(VolumeDeniedError) as caught:
        status.claim_for(namespace, now=now)
    return str(caught.value)


# --- existing: the operator's PVCs, checked ---------------------------------------------------------
def test_existing_a_namespace_without_the_pvc_is_denied_with_what_to_create() -> None:
    plan = plan_volumes(Observed(claims={}, wanted=frozenset({"team-a"})), settings("existing"), now=NOW)
    assert plan.actions == ()
    message = denial(plan.status, "team-a")
    assert "no PersistentVolumeClaim 'modelcache'" in message
    assert "ReadWriteMany PVC named modelcache in team-a" in message
    assert "AIOLI_DISABLE_MODEL_CACHE" in message


def test_existing_a_bound_rwx_pvc_is_ready() -> None:
    plan = plan_volumes(Observed(claims={"team-a": claim("team-a")}, wanted=frozenset()), settings("existing"), now=NOW)
    assert plan.status.claim_for("team-a", now=NOW) == "modelcache"


def test_existing_a_read_write_once_pvc_is_refused_naming_its_modes() -> None:
    claims = {"team-a": claim("team-a", modes=("ReadWriteOnce",))}
    plan = plan_volumes(Observed(claims=claims, wanted=frozenset({"team-a"})), settings("existing"), now=NOW)
    message = denial(plan.status, "team-a")
    assert "has access modes ReadWriteOnce" in message
    assert "recreate it as ReadWriteMany" in message


def test_a_pvc_pending_past_the_deadline_is_an_error_that_says_how_to_find_out_why() -> None:
    config = settings("existing", volume_pending_deadline=timedelta(minutes=3))
    young = {"a": claim("a", phase="Pending", age=60), "b": claim("b", phase="Pending", age=600)}
    plan = plan_volumes(Observed(claims=young, wanted=frozenset()), config, now=NOW)
    assert plan.status.claim_for("a", now=NOW) == "modelcache"  # pending within the deadline: the pod waits
    message = denial(plan.status, "b")
    assert "Pending for 600 s" in message
    assert "kubectl describe pvc -n b modelcache" in message


# --- provision: a PVC per namespace from a StorageClass ---------------------------------------------
def test_provision_creates_a_read_write_many_pvc_where_a_pod_needs_one() -> None:
    observed = Observed(claims={}, wanted=frozenset({"team-a"}), storage_class=NFS_CLASS)
    plan = plan_volumes(observed, settings("provision", storage_size="500Gi"), now=NOW)
    (pvc,) = created(plan.actions, "PersistentVolumeClaim")
    assert pvc["metadata"]["namespace"] == "team-a"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "storageClassName": "nfs-client",
        "resources": {"requests": {"storage": "500Gi"}},
    }
    assert plan.status.claim_for("team-a", now=NOW) == "modelcache"  # served: the pod waits for it briefly


def test_provision_with_a_missing_storage_class_denies_and_creates_nothing() -> None:
    plan = plan_volumes(Observed(claims={}, wanted=frozenset({"team-a"})), settings("provision"), now=NOW)
    assert plan.actions == ()
    assert "StorageClass 'nfs-client' does not exist" in denial(plan.status, "team-a")


@pytest.mark.parametrize("bypass", [False, True])
def test_a_single_node_storage_class_fails_fast_unless_the_check_is_bypassed(bypass: bool) -> None:
    observed = Observed(claims={}, wanted=frozenset({"team-a"}), storage_class=EBS_CLASS)
    plan = plan_volumes(observed, settings("provision", storage_class="gp3", bypass_storage_check=bypass), now=NOW)
    if bypass:
        assert created(plan.actions, "PersistentVolumeClaim")
    else:
        assert plan.actions == ()
        message = denial(plan.status, "team-a")
        assert "ebs.csi.aws.com (Amazon EBS), which cannot provide ReadWriteMany" in message
        assert "bypassStorageCheck" in message


def test_the_controllers_own_namespace_is_never_reported() -> None:
    observed = Observed(claims={}, wanted=frozenset({"modelcache-system", "a"}), storage_class=NFS_CLASS)
    plan = plan_volumes(observed, settings("provision"), now=NOW)
    assert set(plan.status.namespaces) == {"a"}


# --- clone: one shared volume, a PV copy per namespace ----------------------------------------------
def test_clone_first_creates_the_shared_pvc_and_namespaces_wait_for_it() -> None:
    observed = Observed(claims={}, wanted=frozenset({"team-a"}), storage_class=NFS_CLASS)
    plan = plan_volumes(observed, settings("clone", storage_size="300Gi"), now=NOW)
    (pvc,) = created(plan.actions, "PersistentVolumeClaim")
    assert (pvc["metadata"]["namespace"], pvc["spec"]["storageClassName"]) == ("modelcache-system", "nfs-client")
    assert plan.status.namespaces["team-a"].state == "pending"


def test_clone_copies_the_nfs_volume_retained_and_pre_bound_to_the_namespaces_pvc() -> None:
    source = volume("pvc-source", nfs={"server": "10.0.0.5", "path": "/exports/models"}, mountOptions=["nfsvers=4.1"])
    observed = Observed(
        claims={"modelcache-system": claim("modelcache-system")},
        wanted=frozenset({"team-a"}),
        storage_class=NFS_CLASS,
        source_volume=source,
    )
    plan = plan_volumes(observed, settings("clone"), now=NOW)
    (copy,) = created(plan.actions, "PersistentVolume")
    (pvc,) = created(plan.actions, "PersistentVolumeClaim")
    assert copy["spec"]["nfs"] == {"server": "10.0.0.5", "path": "/exports/models"}
    assert copy["spec"]["mountOptions"] == ["nfsvers=4.1"]
    # Deleting the copy must never delete the shared files, and no provisioner may claim it.
    assert copy["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert "pv.kubernetes.io/provisioned-by" not in copy["metadata"].get("annotations", {})
    assert copy["spec"]["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "team-a",
        "name": "modelcache",
    }
    assert pvc["spec"]["volumeName"] == copy["metadata"]["name"] == clone_volume_name("modelcache", "team-a")
    assert pvc["spec"]["storageClassName"] == ""  # binds to the copy only, never to a default class
    assert pvc["spec"]["resources"]["requests"]["storage"] == "300Gi"


@pytest.mark.parametrize("bypass", [False, True])
def test_clone_refuses_a_csi_volume_unless_the_storage_check_is_bypassed(bypass: bool) -> None:
    source = volume("pvc-source", csi={"driver": "efs.csi.aws.com", "volumeHandle": "fs-1"})
    observed = Observed(
        claims={"modelcache-system": claim("modelcache-system")},
        wanted=frozenset({"team-a"}),
        storage_class=NFS_CLASS,
        source_volume=source,
    )
    plan = plan_volumes(observed, settings("clone", bypass_storage_check=bypass), now=NOW)
    if bypass:
        assert created(plan.actions, "PersistentVolume")[0]["spec"]["csi"]["volumeHandle"] == "fs-1"
    else:
        assert plan.actions == ()
        message = denial(plan.status, "team-a")
        assert "of type csi (driver efs.csi.aws.com)" in message
        assert "only nfs and hostPath" in message


def test_clone_removes_copies_whose_pvc_is_gone_and_only_those() -> None:
    released = volume(clone_volume_name("modelcache", "gone")) | {"status": {"phase": "Released"}}
    bound = volume(clone_volume_name("modelcache", "team-a")) | {"status": {"phase": "Bound"}}
    observed = Observed(
        claims={"modelcache-system": claim("modelcache-system"), "team-a": claim("team-a")},
        wanted=frozenset({"team-a"}),
        storage_class=NFS_CLASS,
        source_volume=volume("pvc-source", nfs={"server": "s", "path": "/p"}),
        clones={released["metadata"]["name"]: released, bound["metadata"]["name"]: bound},
    )
    plan = plan_volumes(observed, settings("clone"), now=NOW)
    deletes = [(a.verb, a.name) for a in plan.actions if a.verb == "delete"]
    assert deletes == [("delete", released["metadata"]["name"])]
    assert plan.status.claim_for("team-a", now=NOW) == "modelcache"


# --- clone: the shared files outlive an uninstall ---------------------------------------------------
def patched(actions: tuple[Action, ...], name: str) -> dict[str, Any]:
    (body,) = [a.body for a in actions if a.verb == "patch" and a.name == name and a.body is not None]
    return body


def test_clone_retains_the_shared_volume_so_deleting_its_pvc_keeps_the_files() -> None:
    """The provisioner's volume comes with its class's policy, usually Delete: an uninstall would erase it."""
    source = volume("pvc-source", nfs={"server": "10.0.0.5", "path": "/exports/models"})
    source["spec"]["persistentVolumeReclaimPolicy"] = "Delete"
    observed = Observed(
        claims={"modelcache-system": claim("modelcache-system")},
        wanted=frozenset(),
        storage_class=NFS_CLASS,
        source_volume=source,
    )
    patch = patched(plan_volumes(observed, settings("clone"), now=NOW).actions, "pvc-source")
    assert patch["spec"] == {"persistentVolumeReclaimPolicy": "Retain"}
    assert patch["metadata"]["labels"] == {CACHE_SOURCE_LABEL: "modelcache"}
    source["spec"]["persistentVolumeReclaimPolicy"] = "Retain"
    source["metadata"]["labels"] = {CACHE_SOURCE_LABEL: "modelcache"}
    assert plan_volumes(observed, settings("clone"), now=NOW).actions == ()  # done once


def test_clone_after_a_reinstall_binds_the_new_shared_pvc_to_the_retained_volume() -> None:
    retained = volume("pvc-source", nfs={"server": "10.0.0.5", "path": "/exports/models"})
    retained["metadata"]["labels"] = {CACHE_SOURCE_LABEL: "modelcache"}
    retained["spec"].update(
        persistentVolumeReclaimPolicy="Retain",
        claimRef={"kind": "PersistentVolumeClaim", "namespace": "modelcache-system", "name": "modelcache", "uid": "x"},
    )
    retained["status"] = {"phase": "Released"}
    observed = Observed(claims={}, wanted=frozenset({"team-a"}), storage_class=NFS_CLASS, retained=[retained])
    plan = plan_volumes(observed, settings("clone"), now=NOW)
    claim_ref = patched(plan.actions, "pvc-source")["spec"]["claimRef"]
    assert claim_ref == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "modelcache-system",
        "name": "modelcache",
        "uid": None,  # a merge patch: drops the old PVC's uid, so the PV controller binds the new one
        "resourceVersion": None,
    }
    (pvc,) = created(plan.actions, "PersistentVolumeClaim")
    assert pvc["spec"]["volumeName"] == "pvc-source"
    assert pvc["spec"]["storageClassName"] == "nfs-client"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "300Gi"
    assert [a.verb for a in plan.actions] == ["patch", "create"]  # free the volume for it first


def test_clone_reports_a_namespace_whose_copy_points_at_a_shared_volume_that_is_gone() -> None:
    """An uninstall before this version deleted the shared volume; the copies kept pointing at its path."""
    current = volume("pvc-new", nfs={"server": "10.0.0.5", "path": "/exports/models-new"})
    stale = volume(clone_volume_name("modelcache", "team-a"), nfs={"server": "10.0.0.5", "path": "/exports/old"})
    stale["metadata"]["annotations"] = {"modelcache.io/clone-of": "pvc-old"}
    stale["status"] = {"phase": "Bound"}
    team_a = Claim(
        namespace="team-a",
        name="modelcache",
        phase="Bound",
        access_modes=("ReadWriteMany",),
        volume_name=clone_volume_name("modelcache", "team-a"),
        created=NOW - timedelta(days=3),
        deleting=False,
    )
    observed = Observed(
        claims={"modelcache-system": claim("modelcache-system"), "team-a": team_a},
        wanted=frozenset({"team-a"}),
        storage_class=NFS_CLASS,
        source_volume=current,
        clones={stale["metadata"]["name"]: stale},
    )
    plan = plan_volumes(observed, settings("clone"), now=NOW)
    entry = plan.status.namespaces["team-a"]
    assert entry.state == "error"
    assert "pvc-old" in entry.message
    assert "kubectl -n team-a delete pvc modelcache" in entry.message
    assert "team-a" in denial(plan.status, "team-a")


# --- the status document the webhook reads ----------------------------------------------------------
def test_the_status_document_round_trips_through_json() -> None:
    observed = Observed(
        claims={"b": claim("b", modes=("ReadWriteOnce",))}, wanted=frozenset({"a"}), storage_class=NFS_CLASS
    )
    status = plan_volumes(observed, settings("provision"), now=NOW).status
    assert VolumeStatus.from_json(status.to_json()) == status


def test_a_silent_controller_turns_pending_namespaces_into_denials() -> None:
    observed = Observed(claims={}, wanted=frozenset({"a"}), storage_class=NFS_CLASS)
    status = plan_volumes(observed, settings("provision"), now=NOW).status
    assert status.claim_for("new-namespace", now=NOW + timedelta(minutes=1)) == "modelcache"
    message = denial(status, "new-namespace", now=NOW + timedelta(minutes=10))
    assert "controller has not reported for 600 s" in message


@pytest.mark.parametrize("text", ["", "{}", '{"mode": "magic", "claim": "x", "updated": "2026-01-01T00:00:00+00:00"}'])
def test_a_damaged_status_document_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"volume status|mode 'magic'"):
        VolumeStatus.from_json(text)


# --- node-local: each node's own disk, through a hostPath PV per namespace ----------------------------
def node_claim(namespace: str, *, volume: str = "", phase: str = "Bound") -> Claim:
    from modelcache.controller.volumes import clone_volume_name

    bound = volume or clone_volume_name("modelcache-node", namespace)
    return Claim(namespace, "modelcache-node", phase, ("ReadWriteMany",), bound, NOW - timedelta(seconds=5), False)


def node_pv(namespace: str, *, path: str = "/var/lib/modelcache", phase: str = "Bound") -> dict[str, Any]:
    from modelcache.controller.volumes import clone_volume_name

    name = clone_volume_name("modelcache-node", namespace)
    return {"metadata": {"name": name}, "spec": {"hostPath": {"path": path}}, "status": {"phase": phase}}


def test_node_local_always_gives_each_namespace_a_pvc_bound_to_a_hostpath_volume_no_storage_class_needed() -> None:
    config = ControllerSettings(node_local="always", identity="test", storage_size="800Gi")
    assert config.problems() == []  # no shared volume: no StorageClass to name
    plan = plan_volumes(Observed(claims={}, wanted=frozenset({"team-a"})), config, now=NOW)
    volumes = {pv["spec"]["claimRef"]["namespace"]: pv for pv in created(plan.actions, "PersistentVolume")}
    claims = {pvc["metadata"]["namespace"]: pvc for pvc in created(plan.actions, "PersistentVolumeClaim")}
    assert set(volumes) == set(claims) == {"team-a", "modelcache-system"}  # the agents' DaemonSet mounts its own
    pv, pvc = volumes["team-a"], claims["team-a"]
    assert pv["spec"]["hostPath"] == {"path": "/var/lib/modelcache", "type": "DirectoryOrCreate"}
    assert "nodeAffinity" not in pv["spec"]  # every node mounts its own directory: pods are not pinned
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"  # deleting it never deletes a node's files
    assert pvc["metadata"]["name"] == "modelcache-node"
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == ""  # nothing provisions it: it binds to our PV only
    assert plan.status.claim_for("team-a", now=NOW) == "modelcache-node"
    assert plan.status.namespaces["team-a"].node_local


def test_node_local_a_bound_pvc_is_ready_and_one_whose_volume_has_an_old_path_says_how_to_renew_it() -> None:
    config = ControllerSettings(node_local="always", identity="test", node_local_path="/mnt/nvme/models")
    observed = Observed(
        claims={},
        wanted=frozenset({"a", "b"}),
        node_claims={"a": node_claim("a"), "b": node_claim("b")},
        node_volumes={node_pv("a", path="/mnt/nvme/models")["metadata"]["name"]: node_pv("a", path="/mnt/nvme/models"),
                      node_pv("b")["metadata"]["name"]: node_pv("b")},
    )  # fmt: skip
    plan = plan_volumes(observed, config, now=NOW)
    assert plan.status.claim_for("a", now=NOW) == "modelcache-node"
    message = denial(plan.status, "b")
    assert "points at /var/lib/modelcache on each node, not at the node-local cache directory /mnt/nvme" in message
    assert "kubectl -n b delete pvc modelcache-node" in message


def test_node_local_fallback_serves_only_the_namespaces_the_shared_volume_cannot() -> None:
    claims = {"shared": claim("shared"), "rwo": claim("rwo", modes=("ReadWriteOnce",))}
    observed = Observed(claims=claims, wanted=frozenset({"shared", "rwo", "none"}))
    plan = plan_volumes(observed, settings("existing", node_local="fallback"), now=NOW)
    assert plan.status.claim_for("shared", now=NOW) == "modelcache"
    assert plan.status.claim_for("rwo", now=NOW) == "modelcache-node"  # its own PVC cannot be shared by nodes
    assert plan.status.claim_for("none", now=NOW) == "modelcache-node"
    served = {pvc["metadata"]["namespace"] for pvc in created(plan.actions, "PersistentVolumeClaim")}
    assert served == {"rwo", "none", "modelcache-system"}


def test_node_local_fallback_serves_every_namespace_when_the_storage_class_cannot_share() -> None:
    observed = Observed(claims={}, wanted=frozenset({"team-a"}), storage_class=EBS_CLASS)
    plan = plan_volumes(observed, settings("provision", storage_class="gp3", node_local="fallback"), now=NOW)
    assert "cannot provide ReadWriteMany" in plan.status.problem  # still reported, for `kubectl get configmap`
    assert plan.status.claim_for("team-a", now=NOW) == "modelcache-node"
    assert all(a.body is None or a.body["spec"].get("storageClassName") != "gp3" for a in plan.actions)


def test_node_local_off_creates_nothing_node_local() -> None:
    observed = Observed(claims={}, wanted=frozenset({"team-a"}))
    plan = plan_volumes(observed, settings("existing"), now=NOW)
    assert plan.actions == ()
    assert "no PersistentVolumeClaim 'modelcache'" in denial(plan.status, "team-a")


def test_node_local_a_released_volume_is_deleted_to_be_made_again_and_the_status_round_trips() -> None:
    config = ControllerSettings(node_local="always", identity="test")
    released = node_pv("team-a", phase="Released")
    observed = Observed(claims={}, wanted=frozenset({"team-a"}), node_volumes={released["metadata"]["name"]: released})
    plan = plan_volumes(observed, config, now=NOW)
    assert ("delete", released["metadata"]["name"]) in {(a.verb, a.name) for a in plan.actions}
    assert not [a for a in plan.actions if a.verb == "create" and a.namespace == "team-a"]  # after it is gone
    assert VolumeStatus.from_json(plan.status.to_json()) == plan.status


@pytest.mark.parametrize(
    "path", ["var/lib/x", "/var/lib/../x", "/", "/etc", "/var/lib", "/a,b", "/etc/x", "/var/lib/kubelet/pods"]
)
def test_node_local_path_must_be_a_directory_of_its_own(path: str) -> None:
    from modelcache.runtime.settings import SettingsError

    with pytest.raises(SettingsError, match="MODELCACHE_NODE_LOCAL_PATH"):
        ControllerSettings.from_env({"MODELCACHE_NODE_LOCAL_PATH": path})


def test_node_local_volumes_left_from_before_go_once_their_pvc_is_deleted_even_with_node_local_off() -> None:
    released = node_pv("old-team", phase="Released")
    observed = Observed(claims={}, wanted=frozenset(), node_volumes={released["metadata"]["name"]: released})
    plan = plan_volumes(observed, settings("existing"), now=NOW)
    assert [(a.verb, a.name) for a in plan.actions] == [("delete", released["metadata"]["name"])]
