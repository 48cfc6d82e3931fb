"""Certificates and kubeconfigs for the testbed, made with the openssl command line.

One CA signs the API server's serving cert and the client certs (admin in system:masters, the
real node's kubelet in system:nodes, kube-proxy); an RSA key pair signs service-account tokens.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import yaml

# SANs clients may use to reach the API server: loopback, the real node's address (where it
# listens in real mode, see paths.NODE_IP), the first service IP of --service-cluster-ip-range
# (the `kubernetes` Service, which in-cluster clients use) and its DNS names.
# /16: room for 200+ concurrent rollouts (3 Services each mid-rollout); a /24 ran out at ~80.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/16"
API_SERVER_SANS = (
    "IP:127.0.0.1,IP:10.245.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
    "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
)


CLIENT_EXT = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _issue_cert(pki: Path, name: str, subject: str, extensions: str) -> None:
    # EC keys: generating them is near instant, unlike RSA, which keeps `up` fast.
    _openssl(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=pki,
    )
    (pki / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=pki,
    )


def ensure_pki(pki: Path) -> None:
    """Creates the CA, serving/client certs and SA keys unless a complete set exists."""
    if (pki / ".complete").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=modelrollout-testbed-ca",
        cwd=pki,
    )
    _issue_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        f"subjectAltName={API_SERVER_SANS}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n",
    )
    _issue_cert(pki, "admin", "/O=system:masters/CN=testbed-admin", CLIENT_EXT)
    _issue_cert(pki, "node", "/O=system:nodes/CN=system:node:testbed-node-0", CLIENT_EXT)
    # The default ClusterRoleBinding system:node-proxier names this user.
    _issue_cert(pki, "kube-proxy", "/CN=system:kube-proxy", CLIENT_EXT)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    (pki / ".complete").touch()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def compute_kubeconfig(
    server: str, ca_pem: bytes, user: dict, name: str = "testbed", namespace: str | None = None
) -> dict:
    """A single-context kubeconfig; `user` is the users[].user mapping (cert or token)."""
    context = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()},
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }


def write_admin_kubeconfig(pki: Path, server: str, target: Path, cert: str = "admin") -> None:
    """A kubeconfig with the client cert `cert` (admin; node and kube-proxy for the real node)."""
    user = {"client-certificate-data": _b64(pki / f"{cert}.crt"), "client-key-data": _b64(pki / f"{cert}.key")}
    config = compute_kubeconfig(server, (pki / "ca.crt").read_bytes(), user)
    write_private_yaml(target, config)


def write_private_yaml(target: Path, data: dict) -> None:
    """Writes credentials readable by the owner only."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(target)
