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
items = client.CustomObjectsApi().list_namespaced_custom_object(
    "modelrollout.dev", "v1alpha1", namespace, "modelrollouts")["items"]
print(f"CRD served: modelrollouts.modelrollout.dev/v1alpha1 lists {len(items)} object(s) in {namespace}")

# 2. The operator is ready: a pod behind its metrics Service is Ready and its /readyz says so.
core = client.CoreV1Api()
svc = core.read_namespaced_service(service, namespace)
port_name = next(p.target_port for p in svc.spec.ports if p.name == "metrics")
selector = ",".join(f"{k}={v}" for k, v in sorted(svc.spec.selector.items()))
ready = []
for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    ports = {p.name: p.container_port for c in pod.spec.containers for p in c.ports or []}
    if conditions.get("Ready") == "True" and pod.status.pod_ip and not pod.metadata.deletion_timestamp:
        ready.append((pod.status.pod_ip, ports.get(port_name, port_name)))
if not ready:
    sys.exit(f"operator not ready: no Ready pod behind service {namespace}/{service} ({selector})")
url = "http://{}:{}/readyz".format(*ready[0])
with urllib.request.urlopen(url, timeout=10) as resp:  # raises on a non-2xx answer
    print(f"operator ready: {url} -> {resp.status} {resp.read(200).decode(errors='replace').strip()}")
