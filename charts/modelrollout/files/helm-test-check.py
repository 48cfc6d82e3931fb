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

# 2. The operator is ready: its Service has a ready endpoint, and that endpoint says /readyz OK.
slices = client.DiscoveryV1Api().list_namespaced_endpoint_slice(
    namespace, label_selector=f"kubernetes.io/service-name={service}").items
ready = [(a, p.port) for s in slices for p in (s.ports or []) if p.name == "metrics"
         for e in (s.endpoints or []) if e.conditions and e.conditions.ready for a in e.addresses]
if not ready:
    sys.exit(f"operator not ready: service {namespace}/{service} has no ready endpoint")
url = "http://{}:{}/readyz".format(*ready[0])
with urllib.request.urlopen(url, timeout=10) as resp:  # raises on a non-2xx answer
    print(f"operator ready: {url} -> {resp.status} {resp.read(200).decode(errors='replace').strip()}")
