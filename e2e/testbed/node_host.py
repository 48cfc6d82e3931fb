"""The real node's effects on this host: set up before the node starts, removed by `down`.

What `up` adds (node address on lo, sysctls the kubelet writes, images in containerd) and what
the node leaves (containers, mounts, cni-* netns, the cni0 bridge, KUBE-*/CNI-* iptables chains,
kubepods cgroups, the kubelet's fixed host dirs); `find_leftovers` lists what is still there.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import node_config
from .node_config import BRIDGE, CONTAINERD_NAMESPACE, containerd_socket, node_dir
from .paths import Layout

# Sysctls the kubelet (or the bridge plugin) sets; `up` records the host's values, `down` puts
# them back. kube-proxy is configured to leave its conntrack and route_localnet ones alone.
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward")
NETNS_DIR = Path("/run/netns")  # containerd 1.6 puts pod network namespaces here (cni-*)
# Host paths used whatever the configured dirs: the kubelet's device-plugin socket dir and
# /var/log/containers symlinks, containerd 1.6's shim sockets (/run/containerd/s); removed by
# `down` only if `up` found them absent (with /run/netns, emptied by then).
FIXED_HOST_DIRS = (Path("/var/lib/kubelet"), Path("/var/log/containers"), Path("/run/containerd"), NETNS_DIR)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# kube-proxy's chains, and the portmap plugin's (hostPort); not other CNI users' CNI-* chains.
CHAIN_PREFIXES = ("KUBE-", "CNI-HOSTPORT-", "CNI-DN-")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")


class NodeError(RuntimeError):
    """The real node cannot be set up; the message names the step and what to do."""


def _run(*argv: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise NodeError(f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()}")
    return result


def check_host(lay: Layout) -> None:
    """Fails early, naming what is missing, before anything on the host changes."""
    if os.geteuid() != 0:
        raise NodeError(
            "the real node needs root (containerd, kubelet, iptables, mounts): run "
            "`make cluster-up` as root, or use MODELROLLOUT_TESTBED_NODE=process for a "
            "kwok-only testbed"
        )
    needs = {
        "containerd": "containerd",
        "runc": "runc",
        "ctr": "containerd",
        "iptables": "iptables",
        "ip6tables": "iptables",
        "conntrack": "conntrack",
        "ip": "iproute2",
    }
    missing = sorted({pkg for cmd, pkg in needs.items() if shutil.which(cmd) is None})
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        raise NodeError(f"missing Debian packages for the real node: {' '.join(missing)} (run `make sysdeps`)")
    if (CGROUP_ROOT / "memory").is_dir() is False:
        raise NodeError(
            f"no cgroup v1 memory controller at {CGROUP_ROOT / 'memory'}: the node is "
            "configured for cgroup v1 (cgroupfs driver)"
        )


def ensure_node_address(lay: Layout) -> None:
    addr = f"{lay.node_ip}/32"
    shown = _run("ip", "-o", "addr", "show", "dev", "lo").stdout
    if f" {addr} " not in shown:
        _run("ip", "addr", "add", addr, "dev", "lo", check=True)


def remove_node_address(lay: Layout) -> None:
    if f" {lay.node_ip}/32 " in _run("ip", "-o", "addr", "show", "dev", "lo").stdout:
        _run("ip", "addr", "del", f"{lay.node_ip}/32", "dev", "lo")


def _host_state_file(lay: Layout) -> Path:
    return node_dir(lay) / "host-before-up.json"


def record_host_state(lay: Layout) -> None:
    """Saves what `down` must restore: sysctl values and which fixed host dirs existed."""
    target = _host_state_file(lay)
    if target.exists():  # a repaired node keeps the values from before the first up
        return
    state = {
        "sysctls": {k: (Path("/proc/sys") / k).read_text().strip() for k in SYSCTLS},
        "absent_dirs": [str(d) for d in FIXED_HOST_DIRS if not d.exists()],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(state, indent=1))


def restore_host_state(lay: Layout) -> list[str]:
    try:
        state = json.loads(_host_state_file(lay).read_text())
    except (OSError, ValueError):
        return []
    done = []
    for key, value in state["sysctls"].items():
        path = Path("/proc/sys") / key
        if path.read_text().strip() != value:
            path.write_text(value)
            done.append(f"sysctl {key.replace('/', '.')}={value}")
    for d in map(Path, state["absent_dirs"]):
        if d == NETNS_DIR and d.exists():  # only if empty: another tool's netns may live there
            try:
                d.rmdir()
                done.append(f"removed {d}")
            except OSError:
                pass
        elif d.exists():
            shutil.rmtree(d, ignore_errors=True)
            done.append(f"removed {d}")
    return done


def write_node_configs(lay: Layout) -> None:
    from .pki import write_admin_kubeconfig  # the kubeconfig writer, with the node's certs

    d = node_dir(lay)
    node_config.image_store_dir().mkdir(parents=True, exist_ok=True)
    for sub in ("containerd", "cni/net.d", "kubelet", "kubelet-pki", "pod-logs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "containerd.toml").write_text(node_config.compute_containerd_config(lay))
    (d / "cni" / "net.d" / "10-testbed.conflist").write_text(
        node_config.dump_json(node_config.compute_cni_conflist(lay))
    )
    (d / "kubelet.yaml").write_text(node_config.dump_json(node_config.compute_kubelet_config(lay)))
    (d / "kube-proxy.yaml").write_text(node_config.dump_json(node_config.compute_kube_proxy_config(lay)))
    write_admin_kubeconfig(lay.pki_dir, lay.apiserver_url, d / "kubelet.kubeconfig", cert="node")
    write_admin_kubeconfig(lay.pki_dir, lay.apiserver_url, d / "kube-proxy.kubeconfig", cert="kube-proxy")


def ctr(lay: Layout, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return _run(
        "ctr", f"--address={containerd_socket(lay)}", f"--namespace={CONTAINERD_NAMESPACE}", *args, timeout=timeout
    )


def is_containerd_ready(lay: Layout) -> bool:
    return containerd_socket(lay).exists() and ctr(lay, "version", timeout=10).returncode == 0


def _imported_file() -> Path:
    return node_config.image_store_dir() / "imported.json"


def _archive_key(archive: Path) -> str:
    st = archive.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def import_image_archive(lay: Layout, archive: Path) -> bool:
    """Imports an OCI archive unless this very file (size, mtime) was imported into the kept
    image store before and its images are still there. Returns whether it imported."""
    try:
        imported = json.loads(_imported_file().read_text())
    except (OSError, ValueError):
        imported = {}
    entry = imported.get(str(archive))
    if entry and entry["key"] == _archive_key(archive) and set(entry["names"]) <= list_images(lay):
        return False
    before = list_images(lay)
    result = ctr(lay, "images", "import", str(archive), timeout=600)
    if result.returncode != 0:
        raise NodeError(f"importing {archive} into containerd failed: {result.stderr.strip()}")
    names = sorted(n for n in list_images(lay) - before if not n.startswith("sha256:"))
    names = names or (entry or {}).get("names", [])
    imported[str(archive)] = {"key": _archive_key(archive), "names": names}
    _imported_file().write_text(json.dumps(imported, indent=1))
    return True


def list_images(lay: Layout) -> set[str]:
    return set(ctr(lay, "images", "list", "-q").stdout.split())


def tag_docker_io_names(lay: Layout) -> list[str]:
    """Adds the CRI's normalised name (docker.io/...) to images an archive named short
    (`modelrollout/router:dev`); the kubelet asks the CRI for the normalised one."""
    have, added = list_images(lay), []
    for name in sorted(have):
        full = node_config.cri_name(name)
        if not name.startswith("sha256:") and full != name and full not in have:
            ctr(lay, "images", "tag", name, full, timeout=30)
            added.append(full)
    return added


def remove_containers(lay: Layout) -> int:
    """Kills and deletes every container of the node while containerd still runs; returns how
    many tasks were killed. Pod network namespaces are removed later with the netns."""
    if not is_containerd_ready(lay):
        return 0
    tasks = [line.split()[0] for line in ctr(lay, "tasks", "list", "-q").stdout.splitlines() if line]
    for task in tasks:
        ctr(lay, "tasks", "kill", "--all", "--signal=SIGKILL", task, timeout=30)
    for task in tasks:
        ctr(lay, "tasks", "delete", "--force", task, timeout=30)
    containers = ctr(lay, "containers", "list", "-q").stdout.split()
    if containers:
        ctr(lay, "containers", "delete", *containers, timeout=60)
    return len(tasks)


def _pids_matching(pred) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if pred(entry):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill_node_processes(lay: Layout) -> list[int]:
    """SIGKILLs what outlived containerd: its shims (they name our socket) and any process left
    in the kubepods cgroups."""
    sock = str(containerd_socket(lay))

    def is_ours(proc: Path) -> bool:
        cmdline = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if "containerd-shim" in cmdline and sock in cmdline:
            return True
        return any(":/kubepods" in line for line in proc.joinpath("cgroup").read_text().splitlines())

    pids = _pids_matching(is_ours)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    return pids


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under `root` (from /proc/self/mountinfo), deepest first."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount_under(root: Path) -> list[str]:
    done = []
    for _ in range(5):  # stacked mounts (the kubelet's bind of its root dir) need several passes
        points = mounts_under(root)
        if not points:
            break
        for point in points:
            if _run("umount", point).returncode != 0:
                _run("umount", "-l", point)
            done.append(point)
    return done


def cni_netns() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob("cni-*")) if NETNS_DIR.is_dir() else []


def remove_netns() -> list[str]:
    names = cni_netns()
    for name in names:
        if _run("ip", "netns", "delete", name).returncode != 0:
            _run("umount", "-l", str(NETNS_DIR / name))
            (NETNS_DIR / name).unlink(missing_ok=True)
    return names


def is_bridge_present() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def remove_bridge() -> bool:
    if is_bridge_present():
        _run("ip", "link", "delete", BRIDGE)
        return True
    return False


def _chains(tool: str, table: str) -> tuple[list[str], list[str]]:
    """(the node's chains, rules of built-in chains that jump to them) of one table."""
    out = _run(tool, "-w", "5", "-t", table, "-S").stdout.splitlines()
    chains = [ln.split()[1] for ln in out if ln.startswith("-N ") and ln.split()[1].startswith(CHAIN_PREFIXES)]
    jumps = [
        ln
        for ln in out
        if ln.startswith("-A ")
        and not ln.split()[1].startswith(CHAIN_PREFIXES)
        and any(f"-j {c}" in ln or f"-g {c}" in ln for c in chains)
    ]
    return chains, jumps


def iptables_chains() -> list[str]:
    """`<tool>/<table>/<chain>` for every KUBE-*/CNI-* chain on the host (IPv4 and IPv6)."""
    found = []
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool):
            for table in IPTABLES_TABLES:
                found += [f"{tool}/{table}/{c}" for c in _chains(tool, table)[0]]
    return found


def remove_iptables_chains() -> list[str]:
    removed = []
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for table in IPTABLES_TABLES:
            chains, jumps = _chains(tool, table)
            for rule in jumps:  # shlex: comments in the rules are quoted and hold spaces
                _run(tool, "-w", "5", "-t", table, "-D", *shlex.split(rule)[1:])
            for chain in chains:
                _run(tool, "-w", "5", "-t", table, "-F", chain)
            for chain in chains:
                if _run(tool, "-w", "5", "-t", table, "-X", chain).returncode == 0:
                    removed.append(f"{tool}/{table}/{chain}")
    return removed


def kubepods_cgroups() -> list[Path]:
    return sorted(p for p in CGROUP_ROOT.glob("*/kubepods*") if p.is_dir())


def remove_cgroups() -> list[str]:
    removed = []
    for top in kubepods_cgroups():
        # Children before parents; a cgroup directory is removed with rmdir, not unlink.
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                path.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
            removed.append(str(top))
        except OSError:
            pass
    return removed


def _dirs_absent_before_up(lay: Layout) -> list[Path]:
    try:
        return [Path(d) for d in json.loads(_host_state_file(lay).read_text())["absent_dirs"]]
    except (OSError, ValueError, KeyError):
        return []


def find_leftovers(lay: Layout) -> list[str]:
    """Everything of a real node still on the host; empty after a clean `down` (call before
    the state dir is removed: it holds which host dirs existed before `up`)."""
    found = [f"mount {m}" for m in mounts_under(lay.state_dir)] if lay.state_dir.exists() else []
    found += [f"mount {m}" for m in mounts_under(node_config.image_store_dir())]
    if is_containerd_ready(lay):
        found.append(f"containerd still answers on {containerd_socket(lay)}")
    found += [f"directory {d}" for d in _dirs_absent_before_up(lay) if d.exists()]
    found += [f"netns {n}" for n in cni_netns()]
    found += [f"bridge {BRIDGE}"] if is_bridge_present() else []
    found += [f"iptables chain {c}" for c in iptables_chains()]
    found += [f"cgroup {c}" for c in kubepods_cgroups()]
    if f" {lay.node_ip}/32 " in _run("ip", "-o", "addr", "show", "dev", "lo").stdout:
        found.append(f"address {lay.node_ip}/32 on lo")
    sock = str(containerd_socket(lay))
    names = ("containerd", "kubelet", "kube-proxy", "containerd-shim")

    def is_node_process(proc: Path) -> bool:
        argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
        exe = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else ""
        return exe.startswith(names) and (
            sock in " ".join(a.decode(errors="replace") for a in argv)
            or str(node_dir(lay)) in " ".join(a.decode(errors="replace") for a in argv)
        )

    found += [f"process {pid}" for pid in _pids_matching(is_node_process)]
    return found


def clean_host(lay: Layout) -> list[str]:
    """Removes the node's host state; run after its daemons stopped. Returns what it did."""
    done = [f"killed pid {p}" for p in kill_node_processes(lay)]
    done += [f"unmounted {m}" for m in unmount_under(lay.state_dir)] if lay.state_dir.exists() else []
    done += [f"unmounted {m}" for m in unmount_under(node_config.image_store_dir())]
    done += [f"netns {n}" for n in remove_netns()]
    done += [f"bridge {BRIDGE}"] if remove_bridge() else []
    done += [f"chain {c}" for c in remove_iptables_chains()]
    done += [f"cgroup {c}" for c in remove_cgroups()]
    done += restore_host_state(lay)
    remove_node_address(lay)
    return done
