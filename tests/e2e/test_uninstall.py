"""On a real cluster: uninstalling keeps the cached model, and after a reinstall every namespace is
served from it again (a cache hit, no download). Runs the uninstall of the session's installation and
installs it again, as docs/install.md says.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import CLUSTER, apply, fetcher_state, install, kubectl_json, uninstall, wait_for_pods
from tests.e2e.workloads import pod


def test_an_uninstall_keeps_the_cache_and_a_reinstall_serves_it(installed: Path, namespace: str) -> None:
    annotations = {"modelcache.io/model": CLUSTER.model}
    apply(pod("before", namespace, annotations))
    (before,) = wait_for_pods(namespace, "e2e=before", 1, ready=False)
    uninstall(installed, wait=True)
    try:
        claim = kubectl_json("-n", namespace, "get", "pvc", "modelcache-node" if CLUSTER.node_local else "modelcache")
        assert claim["status"]["phase"] == "Bound"  # the namespace's cache volume is still there
    finally:
        install(installed)
    after_pod = pod("after", namespace, annotations)
    if CLUSTER.node_local:  # the copy is on the node the first pod ran on
        after_pod["spec"]["nodeName"] = before["spec"]["nodeName"]
    apply(after_pod)
    (after,) = wait_for_pods(namespace, "e2e=after", 1, ready=False)
    summary = fetcher_state(after)[2]
    assert summary.startswith("cache hit"), summary
