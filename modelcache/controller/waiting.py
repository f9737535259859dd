"""Pods that wait for their model: the scheduling gate lifted once it is Ready, a fetch started, and Events.

The webhook gives a pod that waits for its model (modelcache.io/wait-for-model, or the cluster
default) the scheduling gate ``modelcache.io/model`` when the model is not Ready in its namespace's
cache. Such a pod is not scheduled, so it holds no node and no GPU; it also runs no init container,
so something else must fetch the model. At every pass, for the pending pods with the model label:

- **gated pods**, by namespace and model: Ready in that namespace's cache (its CachedModel entry,
  kept by the cache agent, or the fetch Job below succeeded) lifts the gate of every one of them; else
  a fetch Job is made in that namespace if there is none (a prefetch Job: its pod asks for the model
  through the annotation, so the webhook injects the same fetcher, PVC, Secret keys and settings as
  for the serving pods, and never gates it), and the pods get an Event saying what they wait for;
- **pods in Init** (their fetcher waits for another pod's download, or downloads): an Event with the
  model's phase, progress and holder, so ``kubectl describe pod`` says why the pod is not running yet;
- **declared CachedModels** (``spec.namespaces``): a fetch Job in each named namespace whose cache
  volume neither holds the model Ready nor is downloading it, so the model is there before any pod.

Namespaces served from their nodes' own disks (node-local caches) differ: a model is ready per node,
so the webhook gates none of their pods (one gated before the namespace moved is let go at once), a
pod in Init is told about the cache of its node (``node:<name>``), and a declared CachedModel gets no
fetch Job there (it would fill one node's cache): ``spec.nodeSelector`` warms nodes instead.

A model that fails (the Job gave up, or its CachedModel entry says Failed) leaves its pods gated with
a Warning Event that carries the fetcher's own message and says how to try again. Events repeat at
most every EVENT_EVERY seconds per pod and reason unless their message changes (no more often than
EVENT_MIN_GAP then); a repeat raises the Event's count, as the kubelet's do.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modelcache.contract import JsonObject, cachedmodel
from modelcache.contract.annotation import INCLUDE_ANNOTATION, MODEL_ANNOTATION, SECRET_ANNOTATION
from modelcache.contract.wire import FETCHER_CONTAINER_NAME, MODEL_KEY_LABEL, SCHEDULING_GATE
from modelcache.controller.config import ControllerSettings
from modelcache.controller.volumes import MANAGED_BY
from modelcache.runtime.kube import ApiError, Kube, path

log = logging.getLogger("controller")
EVENT_EVERY = 120.0  # seconds: an unchanged Event is repeated (count + 1) this often at most
EVENT_MIN_GAP = 30.0  # seconds: a changed message (progress) is sent no more often than this
COMPONENT = "modelcache-controller"
WAIT_COMPONENT_LABEL = {"app.kubernetes.io/component": "model-wait"}


@dataclass(slots=True)
class WaitReport:
    ungated: list[str] = field(default_factory=list)  # namespace/pod
    jobs_created: list[str] = field(default_factory=list)  # namespace/job
    events: int = 0


@dataclass(frozen=True, slots=True)
class ModelState:
    """A model as one namespace's cache sees it."""

    phase: str  # Pending, Downloading, Ready, Failed
    text: str  # for people: where, how far, who, or why it failed


class EventMemory:
    """What was last said to each pod, for the rate limit (kept across passes, lost on restart)."""

    def __init__(self) -> None:
        self.said: dict[tuple[str, str], tuple[float, str]] = {}

    def due(self, uid: str, reason: str, message: str, now: float) -> bool:
        last = self.said.get((uid, reason))
        if last is None:
            return True
        at, before = last
        return now - at >= (EVENT_MIN_GAP if message != before else EVENT_EVERY)

    def remember(self, uid: str, reason: str, message: str, now: float) -> None:
        self.said[uid, reason] = (now, message)

    def forget_except(self, uids: set[str]) -> None:
        self.said = {k: v for k, v in self.said.items() if k[0] in uids}


def volume_for(settings: ControllerSettings, namespace: str) -> str:
    """The cache volume a namespace's pods mount, as CachedModel entries name it."""
    home = settings.namespace if settings.volume_mode == "clone" else namespace
    return cachedmodel.volume_id(home, settings.claim_name)


def job_name(key: str) -> str:
    return "modelcache-wait-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def is_gated(pod: JsonObject) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(isinstance(g, dict) and g.get("name") == SCHEDULING_GATE for g in gates)


def fetcher_waiting(pod: JsonObject) -> bool:
    """Bound and in Init: its fetcher has not finished (it downloads, or waits for another pod's download)."""
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    for status in statuses:
        if status.get("name") == FETCHER_CONTAINER_NAME:
            return not status.get("ready") and "terminated" not in (status.get("state") or {})
    return False


def state_of(
    model: JsonObject | None,
    volume: str,
    job: JsonObject | None,
    job_failure: str,
    unreported: str = "a fetch Job downloads it",
) -> ModelState:
    """Ready, Failed, Downloading or Pending in this volume: the fetch Job first (it is the freshest), then
    the CachedModel entry the cache agent keeps."""
    if job is not None and _job_condition(job, "Complete"):
        return ModelState("Ready", f"ready in cache {volume} (the fetch Job {job['metadata']['name']} succeeded)")
    if job is not None and _job_condition(job, "Failed"):
        name = job["metadata"]["name"]
        why = job_failure or "see its pods' logs"
        return ModelState(
            "Failed",
            f"the fetch Job {name} failed: {why}. Fix the cause, then delete job/{name}: the next pass starts another",
        )
    entry = _entry(model, volume)
    if entry is None and job is not None:
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        return ModelState(
            "Pending", f"not in cache {volume} yet; `kubectl -n {namespace} describe job/{name}` fetches it"
        )
    if entry is None:
        return ModelState("Pending", f"not in cache {volume} yet ({unreported})")
    phase = str(entry.get("phase") or "Pending")
    message = str(entry.get("message") or "")
    if phase == "Ready":
        return ModelState("Ready", f"ready in cache {volume}")
    if phase == "Downloading":
        return ModelState("Downloading", f"downloading into cache {volume}: {message}")
    return ModelState(
        phase, f"{phase.lower()} in cache {volume}: {message}" if message else f"{phase.lower()} in cache {volume}"
    )


def _job_condition(job: JsonObject, kind: str) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _entry(model: JsonObject | None, volume: str) -> JsonObject | None:
    caches = ((model or {}).get("status") or {}).get("caches") or []
    return next((e for e in caches if isinstance(e, dict) and e.get("volume") == volume), None)


class Waiting:
    """One pass over the pods that wait for a model (the controller's leader runs it)."""

    def __init__(
        self,
        api: Kube,
        settings: ControllerSettings,
        memory: EventMemory | None = None,
        node_local: Callable[[str], bool] | None = None,
    ) -> None:
        """`node_local(namespace)`: whether that namespace's pods use their nodes' own caches (the
        controller's last volume status says)."""
        self.api, self.settings = api, settings
        self.memory = memory or EventMemory()
        self.node_local = node_local or (lambda _: False)

    def reconcile(self, now: float | None = None) -> WaitReport:
        now = time.time() if now is None else now
        report = WaitReport()
        params = {"labelSelector": MODEL_KEY_LABEL, "fieldSelector": "status.phase=Pending"}
        pods = self.api.get(path("v1", "pods"), params=params).get("items", [])
        gated = [p for p in pods if is_gated(p)]
        initing = [p for p in pods if not is_gated(p) and fetcher_waiting(p)]
        self.memory.forget_except({str(p["metadata"].get("uid")) for p in pods})
        listed = self._listed_models()
        models = {key: obj for obj in listed if (key := str((obj.get("status") or {}).get("key") or ""))}
        declared = [obj for obj in listed if (obj.get("spec") or {}).get("namespaces")]
        if not gated and not initing and not declared:
            return report
        jobs = self._jobs()
        for obj in declared:
            self._prefetch(obj, jobs, report)
        groups: dict[tuple[str, str], list[JsonObject]] = defaultdict(list)
        for pod in gated:
            groups[pod["metadata"]["namespace"], pod["metadata"]["labels"][MODEL_KEY_LABEL]].append(pod)
        for (namespace, key), members in sorted(groups.items()):
            self._gated(namespace, key, members, models.get(key), jobs.get((namespace, key)), now, report)
        for pod in initing:
            namespace, key = pod["metadata"]["namespace"], pod["metadata"]["labels"][MODEL_KEY_LABEL]
            unreported = "its fetcher works on it; the cache agent reports its progress at its next scan"
            volume = volume_for(self.settings, namespace)
            if self.node_local(namespace):
                volume = cachedmodel.node_volume_id(str((pod.get("spec") or {}).get("nodeName", "")))
            state = state_of(models.get(key), volume, None, "", unreported)
            source = (pod["metadata"].get("annotations") or {}).get(MODEL_ANNOTATION, key)
            self._event(pod, "WaitingForModel", "Normal", f"waiting for model {source}: {state.text}", now, report)
        return report

    def _gated(
        self,
        namespace: str,
        key: str,
        pods: list[JsonObject],
        model: JsonObject | None,
        job: JsonObject | None,
        now: float,
        report: WaitReport,
    ) -> None:
        failure = self._job_failure(job) if job is not None and _job_condition(job, "Failed") else ""
        state = state_of(model, volume_for(self.settings, namespace), job, failure)
        if self.node_local(namespace):  # ready per node, and these have none yet: nothing to wait for here
            state = ModelState(
                "Ready", "not waited for: its namespace uses node-local caches, the pod fetches on its node"
            )
        source = (pods[0]["metadata"].get("annotations") or {}).get(MODEL_ANNOTATION, key)
        if state.phase == "Ready":
            for pod in pods:
                if self._ungate(pod):
                    report.ungated.append(f"{namespace}/{pod['metadata']['name']}")
                    self._event(pod, "ModelReady", "Normal", f"model {source} is {state.text}: scheduling", now, report)
            return
        if job is None and state.phase != "Failed":
            self._create_job(namespace, pods[0]["metadata"].get("annotations") or {}, key, report)
        kind, reason = ("Warning", "ModelFailed") if state.phase == "Failed" else ("Normal", "WaitingForModel")
        text = f"not scheduled until model {source} is ready: {state.text}"
        for pod in pods:
            self._event(pod, reason, kind, text, now, report)

    # --- the API --------------------------------------------------------------------------------------
    def _listed_models(self) -> list[JsonObject]:
        try:
            listed: list[JsonObject] = self.api.get(path(cachedmodel.API_VERSION, cachedmodel.PLURAL)).get("items", [])
        except ApiError as err:
            if err.status != 404:
                raise
            return []  # no CRD: the fetch Jobs alone say when a model is ready
        return listed

    def _prefetch(self, obj: JsonObject, jobs: dict[tuple[str, str], JsonObject], report: WaitReport) -> None:
        """A declared CachedModel: a fetch Job for each named namespace's volume that lacks the model."""
        key = cachedmodel.key_of(obj)
        spec = obj.get("spec") or {}
        if not key:
            self._refuse(obj, report)
            return
        volumes: set[str] = set()
        for namespace in spec.get("namespaces") or []:
            volume = volume_for(self.settings, namespace)
            if self.node_local(namespace):
                continue  # a Job would fill one node's cache: spec.nodeSelector warms the nodes
            if volume in volumes or key == "":
                continue  # clone mode: every namespace shares one volume, one Job fills it
            volumes.add(volume)
            entry = _entry(obj, volume)
            if (entry or {}).get("phase") in ("Ready", "Downloading") or (namespace, key) in jobs:
                continue
            annotations = {MODEL_ANNOTATION: str(spec.get("source", ""))}
            if spec.get("include"):
                annotations[INCLUDE_ANNOTATION] = ",".join(spec["include"])
            if spec.get("secret"):
                annotations[SECRET_ANNOTATION] = str(spec["secret"])
            self._create_job(namespace, annotations, key, report)

    def _jobs(self) -> dict[tuple[str, str], JsonObject]:
        selector = ",".join(f"{k}={v}" for k, v in {**MANAGED_BY, **WAIT_COMPONENT_LABEL}.items())
        listed = self.api.get(path("batch/v1", "jobs"), params={"labelSelector": selector}).get("items", [])
        found = {}
        for job in listed:
            key = (job["metadata"].get("labels") or {}).get(MODEL_KEY_LABEL)
            if key:
                found[job["metadata"]["namespace"], key] = job
        return found

    def _job_failure(self, job: JsonObject) -> str:
        """The fetcher's termination message from the Job's newest failed pod ("" if none says)."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        params = {"labelSelector": f"job-name={name}"}
        pods = self.api.get(path("v1", "pods", namespace=namespace), params=params).get("items", [])
        for pod in sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", "")), reverse=True):
            for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
                state = status.get("state") or {}
                terminated = state.get("terminated") or (status.get("lastState") or {}).get("terminated") or {}
                if status.get("name") == FETCHER_CONTAINER_NAME and terminated.get("message"):
                    return str(terminated["message"]).strip()[:1024]
        return ""

    def _ungate(self, pod: JsonObject) -> bool:
        """Remove our gate (a JSON Patch that tests the gates first: a concurrent change makes it fail)."""
        metadata = pod["metadata"]
        try:
            where = path("v1", "pods", metadata["name"], namespace=metadata["namespace"])
            self.api.patch(where, ungate_patch(pod), kind="json")
        except ApiError as err:
            if err.status in (404, 409, 422):
                return False  # gone, or changed meanwhile: the next pass sees it again
            raise
        log.info("lifted the scheduling gate of pod %s/%s: its model is ready", metadata["namespace"], metadata["name"])
        return True

    def _create_job(self, namespace: str, annotations: dict[str, str], key: str, report: WaitReport) -> None:
        """A fetch Job in `namespace` for the model these modelcache.io/* annotations name."""
        from modelcache.contract.annotation import parse_include
        from modelcache.contract.errors import ContractError
        from modelcache.contract.prefetch import prefetch_job
        from modelcache.contract.sources import parse_source

        try:
            source = parse_source(annotations[MODEL_ANNOTATION], allow_http=True)
            include = parse_include(annotations[INCLUDE_ANNOTATION]) if INCLUDE_ANNOTATION in annotations else ()
        except (ContractError, KeyError):
            return  # the webhook admitted it, so this does not happen; nothing to fetch without a source
        labels = {**MANAGED_BY, **WAIT_COMPONENT_LABEL, MODEL_KEY_LABEL: key}
        job = prefetch_job(
            source,
            namespace=namespace,
            image=self.settings.fetcher_image,
            include=include,
            secret=annotations.get(SECRET_ANNOTATION),
            labels=labels,
            name=job_name(key),
        )
        job["spec"]["ttlSecondsAfterFinished"] = 3600
        try:
            self.api.create(path("batch/v1", "jobs", namespace=namespace), job)
        except ApiError as err:
            if err.status != 409:
                raise
            return
        report.jobs_created.append(f"{namespace}/{job['metadata']['name']}")
        log.info(
            "created job %s/%s to fetch %s for the pods that wait for it",
            namespace,
            job["metadata"]["name"],
            source.uri,
        )

    def _refuse(self, obj: JsonObject, report: WaitReport) -> None:
        """A declared source that is not one: a Warning on the object (`kubectl describe cachedmodel`)."""
        from modelcache.contract.errors import ContractError
        from modelcache.contract.sources import parse_source

        spec = obj.get("spec") or {}
        try:
            parse_source(str(spec.get("source", "")), allow_http=True)
            problem = "its spec.source could not be read"
        except ContractError as err:
            problem = str(err)
        message = (
            f"nothing is fetched for it: {problem}. Create a CachedModel with a valid spec.source and delete this one"
        )
        self._event(obj, "InvalidSource", "Warning", message, time.time(), report)

    def _event(self, pod: JsonObject, reason: str, kind: str, message: str, now: float, report: WaitReport) -> None:
        metadata = pod["metadata"]
        uid = str(metadata.get("uid", ""))
        if not self.memory.due(uid, reason, message, now):
            return
        try:
            record_event(self.api, pod, reason=reason, kind=kind, message=message, instance=self.settings.identity)
        except ApiError as err:
            log.warning(
                "could not record the %s Event of %s/%s: %s",
                reason,
                metadata.get("namespace", "-"),
                metadata["name"],
                err.message,
            )
            return
        self.memory.remember(uid, reason, message, now)
        report.events += 1


def ungate_patch(pod: JsonObject) -> list[JsonObject]:
    """The JSON Patch that lifts our gate and nothing else: it tests the gates first, so a concurrent change
    fails it (manifests/base/controller-pod-updates.yaml refuses any other change by the controller)."""
    gates = pod["spec"]["schedulingGates"]
    remaining = [g for g in gates if g.get("name") != SCHEDULING_GATE]
    ops: list[JsonObject] = [{"op": "test", "path": "/spec/schedulingGates", "value": gates}]
    if remaining:
        return [*ops, {"op": "replace", "path": "/spec/schedulingGates", "value": remaining}]
    return [*ops, {"op": "remove", "path": "/spec/schedulingGates"}]


def record_event(api: Kube, about: JsonObject, *, reason: str, kind: str, message: str, instance: str) -> None:
    """A core/v1 Event on a pod (or a CachedModel, whose Events go to `default`, as a Node's do), named by
    the object and reason: a repeat raises its count, as the kubelet's do."""
    metadata = about["metadata"]
    namespace, name = metadata.get("namespace") or "default", metadata["name"]
    involved = {"apiVersion": about.get("apiVersion", "v1"), "kind": about.get("kind", "Pod"), "name": name}
    involved |= {"namespace": metadata["namespace"]} if metadata.get("namespace") else {}
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    uid = str(metadata.get("uid", ""))
    event_name = f"{name}.modelcache-{reason.lower()}-{uid[:8]}".rstrip("-")[:253]
    where = path("v1", "events", namespace=namespace)
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name, "namespace": namespace},
        "involvedObject": {**involved, "uid": uid},
        "reason": reason,
        "message": message[:1024],
        "type": kind,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": COMPONENT},
        "reportingComponent": "modelcache.io/controller",
        "reportingInstance": instance[:128],
    }
    try:
        api.create(where, body)
    except ApiError as err:
        if err.status != 409:
            raise
        current = api.read(path("v1", "events", event_name, namespace=namespace)) or {}
        count = int(current.get("count") or 1) + 1
        api.patch(
            path("v1", "events", event_name, namespace=namespace),
            {"count": count, "lastTimestamp": stamp, "message": message[:1024], "type": kind},
        )
