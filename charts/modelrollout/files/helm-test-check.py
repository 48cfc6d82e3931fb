"""`helm test` check: the ModelRollout CRD is served and the operator reports ready.

Run by the test pod as `python3 -c <this file> <namespace> <metrics-service>`.
"""

import sys
import urllib.request

from kubernetes import client, config

namespace, service = sys.argv[1], sys.argv[2]
try:
    config.load_incluster_config()
except config.ConfigException:
    config.load_kube_config()  # the local testbed hands pods a kubeconfig via $KUBECONFIG

# 1. The CRD is served: listing ModelRollouts through the API succeeds.
listing = client.CustomObjectsApi().list_namespaced_custom_object(
    "modelrollout.dev", "v1alpha1", namespace, "modelrollouts"
)
items = listing.get("items") if isinstance(listing, dict) else None
if not isinstance(items, list):
    sys.exit(
        f"CRD not served: listing modelrollouts in {namespace} returned {type(listing).__name__}, "
        "not a list object with an items array"
    )
print(f"CRD served: modelrollouts.modelrollout.dev/v1alpha1 lists {len(items)} object(s) in {namespace}")

# 2. The operator is ready: a pod behind its metrics Service is Ready and its /readyz says so.
core = client.CoreV1Api()
svc_spec = core.read_namespaced_service(service, namespace).spec
if svc_spec is None or not svc_spec.ports or not svc_spec.selector:
    sys.exit(f"service {namespace}/{service} has no ports or no selector; the chart renders both")
# targetPort is a number or a container port's name; unset means the same number as port.
target = next(p.port if p.target_port is None else p.target_port for p in svc_spec.ports if p.name == "metrics")
selector = ",".join(f"{k}={v}" for k, v in sorted(svc_spec.selector.items()))
ready = []
for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
    status, pod_spec, meta = pod.status, pod.spec, pod.metadata
    if status is None or pod_spec is None or meta is None:
        continue  # a pod the API server has not filled in is not Ready either
    conditions = {c.type: c.status for c in status.conditions or []}
    ports = {p.name: p.container_port for c in pod_spec.containers for p in c.ports or []}
    if conditions.get("Ready") == "True" and status.pod_ip and not meta.deletion_timestamp:
        ready.append((status.pod_ip, target if isinstance(target, int) else ports.get(target, target)))
if not ready:
    sys.exit(f"operator not ready: no Ready pod behind service {namespace}/{service} ({selector})")
url = "http://{}:{}/readyz".format(*ready[0])
with urllib.request.urlopen(url, timeout=10) as resp:  # raises on a non-2xx answer
    print(f"operator ready: {url} -> {resp.status} {resp.read(200).decode(errors='replace').strip()}")
