"""Prometheus configuration for the testbed: discover pods through the testbed API server.

Pods opt in with the annotations prometheus.io/scrape, prometheus.io/port, prometheus.io/path;
scraped series get `namespace` and `pod` labels.
"""

from __future__ import annotations

from pathlib import Path

import yaml

# Short so e2e tests and the demo's analysis steps see fresh data within seconds.
SCRAPE_INTERVAL = "2s"


def compute_prometheus_config(kubeconfig: Path) -> dict:
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                        "action": "keep",
                        "regex": "true",
                    },
                    # Finished pods keep their IP in status but nothing listens there any more.
                    {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "drop", "regex": "Succeeded|Failed"},
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                        "action": "replace",
                        "target_label": "__metrics_path__",
                        "regex": "(.+)",
                    },
                    {
                        "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                        "action": "replace",
                        "target_label": "__address__",
                        "regex": r"([^:]+)(?::\d+)?;(\d+)",
                        "replacement": "$1:$2",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }


def compute_prometheus_argv(
    binary: str, config: Path, data_dir: Path, port: int, listen_ip: str = "127.0.0.1"
) -> list[str]:
    """`listen_ip`: loopback, or the real node's address so pods (the operator) can query it."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={listen_ip}:{port}",
        "--storage.tsdb.retention.time=1d",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]


def write_prometheus_config(target: Path, kubeconfig: Path) -> None:
    target.write_text(yaml.safe_dump(compute_prometheus_config(kubeconfig), sort_keys=False))
