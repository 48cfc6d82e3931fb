"""Local Kubernetes testbed: real control plane, kwok node, pods as local processes, Prometheus.

See docs/testbed.md; `e2e.testbed.paths` is the API other code uses to find kubectl, helm, etc.
"""
