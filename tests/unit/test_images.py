"""The Dockerfiles and images/catalog.py, checked without building anything.

The real builds and runs are images/build.sh (`make images`) and images/smoke.sh.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from images import catalog

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {image.name: ROOT / image.dockerfile for image in catalog.IMAGES}
PYTHON_IMAGES = ("operator", "model-server")

# Group names Debian's base-passwd creates on every Debian/Ubuntu image, python:3.11-slim included
# (/usr/share/base-passwd/group.master, base-passwd 3.6). `useradd NAME` without --gid makes a group
# NAME, so a NAME from this list fails: "useradd: group operator exists".
DEBIAN_BASE_GROUPS = frozenset(
    "root daemon bin sys adm tty disk lp mail news uucp man proxy kmem dialout fax voice cdrom "
    "floppy tape sudo audio dip www-data backup operator list irc src shadow utmp video sasl "
    "plugdev staff games users nogroup".split()
)

# The operator/Dockerfile line before the fix (main 4d7f9ab); its build on a Debian base failed.
OLD_OPERATOR_USERADD = "useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin operator"


def parse_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comment lines dropped, continuation lines joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def stages(text: str) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = [[]]
    for instr in parse_instructions(text):
        if instr[0] == "FROM":
            out.append([])
        out[-1].append(instr)
    return out  # out[0]: the global ARGs before the first FROM


def colliding_group_names(run_args: str) -> list[str]:
    """Names a RUN's groupadd/useradd would create that Debian's base groups already have."""
    found = []
    for command in re.split(r"&&|;|\|\|", run_args):
        words = shlex.split(command)
        if not words or words[0] not in ("groupadd", "useradd"):
            continue
        name = words[-1]
        gives_group = words[0] == "groupadd" or not ({"-g", "--gid"} & set(words)) and "-N" not in words
        if gives_group and name in DEBIAN_BASE_GROUPS:
            found.append(name)
    return found


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_images_are_build_args_with_upstream_defaults(name):
    text = DOCKERFILES[name].read_text()
    global_args = dict(arg.partition("=")[::2] for _, arg in stages(text)[0])
    expected = (
        {"BASE_IMAGE": "python:3.11-slim"}
        if name in PYTHON_IMAGES
        else {"GO_IMAGE": "golang:1.26", "RUNTIME_IMAGE": "gcr.io/distroless/static-debian12:nonroot"}
    )
    assert global_args == expected
    stage_names = {args.split()[-1] for kw, args in parse_instructions(text) if kw == "FROM" and " AS " in args}
    for kw, args in parse_instructions(text):
        if kw == "FROM":
            source = args.split()[0]
            # An upstream name here would bypass the ARG; a local name would break Docker users.
            assert source.startswith("${") or source in stage_names | {"scratch"}, args
    assert "localhost/" not in text.replace("localhost/modelrollout-base-", "")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_every_stage_that_runs_sets_numeric_user_65532(name):
    final = stages(DOCKERFILES[name].read_text())[-1]
    users = [args for kw, args in final if kw == "USER"]
    if not users:  # the router's final stages inherit USER from its `runtime` stage
        runtime = [s for s in stages(DOCKERFILES[name].read_text()) if s and s[0][1].endswith("AS runtime")]
        users = [args for kw, args in runtime[0] if kw == "USER"]
    assert users == ["65532:65532"]


@pytest.mark.parametrize("name", PYTHON_IMAGES)
def test_groupadd_useradd_names_do_not_collide_with_debian_base_groups(name):
    runs = [args for kw, args in parse_instructions(DOCKERFILES[name].read_text()) if kw == "RUN"]
    assert any("useradd" in run for run in runs)
    for run in runs:
        assert colliding_group_names(run) == [], run
        if "useradd" in run:
            assert "--gid 65532" in run and "groupadd --gid 65532" in run


def test_the_collision_check_flags_the_line_that_broke_the_operator_build():
    assert colliding_group_names(OLD_OPERATOR_USERADD) == ["operator"]
    assert colliding_group_names("groupadd --gid 65532 staff && useradd --gid 65532 x") == ["staff"]
    assert colliding_group_names("useradd --uid 1 --gid 65532 operator") == []


@pytest.mark.parametrize("name", PYTHON_IMAGES)
def test_python_images_need_no_writable_root(name):
    text = DOCKERFILES[name].read_text()
    env = " ".join(args for kw, args in stages(text)[-1] if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    # mtimes are reset by --timestamp 0, so only hash-based .pyc files stay valid.
    assert "--invalidation-mode unchecked-hash /opt/venv/lib" in text
    assert "python3 -m venv /opt/venv" in text and "--prefix" not in " ".join(
        args for kw, args in parse_instructions(text) if kw == "RUN"
    )


def operator_requirements() -> list[str]:
    run = next(
        args
        for kw, args in parse_instructions(DOCKERFILES["operator"].read_text())
        if kw == "RUN" and "pip install" in args
    )
    return re.findall(r'"([A-Za-z][^"]*)"', run)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_operator_dockerfile_requirements_are_pyproject_dependencies():
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = set(re.findall(r'^\s+"([^"]+)",$', pyproject.split("[project.optional-dependencies]")[0], re.M))
    assert operator_requirements() and set(operator_requirements()) <= deps


def test_operator_dockerfile_installs_every_third_party_import_of_the_operator():
    # The image installs a hand-kept subset of pyproject's dependencies (not onnxruntime, kserve...);
    # a new import in rollout_operator without a line here gave "No module named 'promql_parser'".
    modules = set()
    for path in (ROOT / "operator/rollout_operator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"rollout_operator", "__future__"}
    dists = importlib.metadata.packages_distributions()
    needed = {normalize(dists[m][0]) for m in third_party}
    assert needed - installed_with_dependencies(operator_requirements()) == set()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, f"not a requirement: {requirement!r}"
    return normalize(match.group(0))


def installed_with_dependencies(requirements: list[str]) -> set[str]:
    """The distributions pip installs for `requirements` (as this venv resolved them), extras aside."""
    todo, seen = [requirement_name(r) for r in requirements], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(normalize(req.name))
    return seen


def test_model_server_image_installs_silero_vad_like_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"--no-deps '(silero-vad[^']+)'", makefile)
    assert found, "the Makefile installs silero-vad with --no-deps"
    spec = found.group(1)
    assert f"--no-deps '{spec}'" in DOCKERFILES["model-server"].read_text()


def test_router_dockerfile_has_a_prebuilt_target_and_a_from_source_default():
    all_stages = stages(DOCKERFILES["router"].read_text())
    last = all_stages[-1]
    assert last[0] == ("FROM", "runtime") and ("COPY", "--from=build /router /router") in last
    prebuilt = next(s for s in all_stages if s and s[0][1] == "runtime AS prebuilt")
    assert ("COPY", "router /router") in prebuilt
    build = next(s for s in all_stages if s and s[0][1] == "${GO_IMAGE} AS build")
    assert any('CGO_ENABLED=0 go build -trimpath -ldflags "-s -w"' in args for _, args in build)
    host_build = (ROOT / "model_server/traffic_router/build.sh").read_text()
    assert 'CGO_ENABLED=0 go build -trimpath -ldflags "-s -w"' in host_build


def test_catalog_names_are_the_charts_defaults():
    values = yaml.safe_load((ROOT / "charts/modelrollout/values.yaml").read_text())
    refs = {image.name: image.ref for image in catalog.IMAGES}
    assert refs == {
        "operator": f"{values['image']['repository']}:{values['image']['tag']}",
        "model-server": values["operator"]["modelServerImage"],
        "router": values["operator"]["routerImage"],
    }
    assert set(catalog.SCRATCH_MOUNTS) == set(refs)


def test_base_key_is_a_content_hash_of_the_recipe():
    recipe = {"base.sh": b"debootstrap ...", "Containerfile.base": b"FROM scratch"}
    key = catalog.compute_base_key(recipe, "bookworm", "amd64")
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    assert catalog.compute_base_key(dict(reversed(recipe.items())), "bookworm", "amd64") == key
    changed = [
        {**recipe, "base.sh": b"debootstrap ...\n"},
        {**recipe, "Containerfile.base": b"FROM scratch "},
        # moving bytes between files must change the key too
        {"base.sh": b"debootstrap ...FROM", "Containerfile.base": b" scratch"},
    ]
    assert all(catalog.compute_base_key(r, "bookworm", "amd64") != key for r in changed)
    assert catalog.compute_base_key(recipe, "trixie", "amd64") != key
    assert catalog.compute_base_key(recipe, "bookworm", "arm64") != key
    real = catalog.read_base_recipe()
    assert set(real) == {"base.sh", "Containerfile.base"}


def test_base_image_names_are_local_and_honest():
    refs = catalog.compute_base_refs("0123456789ab")
    assert refs == {
        "python": "localhost/modelrollout-base-python:bookworm-0123456789ab",
        "static": "localhost/modelrollout-base-static:bookworm-0123456789ab",
    }


@pytest.mark.parametrize(
    "ref, qualified",
    [
        ("modelrollout/router:dev", "docker.io/modelrollout/router:dev"),
        ("busybox", "docker.io/library/busybox"),
        ("registry.example.com/team/server:v1", "registry.example.com/team/server:v1"),
        ("localhost:5000/x:y", "localhost:5000/x:y"),
        ("localhost/modelrollout/router:dev", "localhost/modelrollout/router:dev"),
    ],
)
def test_qualify_ref_matches_how_kubernetes_resolves_short_names(ref, qualified):
    assert catalog.qualify_ref(ref) == qualified


def test_archive_is_current_only_for_the_same_image_and_file(tmp_path):
    archive = tmp_path / "router.oci.tar"
    entry = {"image_id": "sha256:aa", "archive_bytes": 3}
    assert not catalog.is_archive_current(entry, "sha256:aa", archive)  # no file yet
    archive.write_bytes(b"abc")
    assert catalog.is_archive_current(entry, "sha256:aa", archive)
    assert not catalog.is_archive_current(entry, "sha256:bb", archive)  # image rebuilt
    assert not catalog.is_archive_current(None, "sha256:aa", archive)  # first run
    archive.write_bytes(b"abcd")  # truncated or replaced by hand
    assert not catalog.is_archive_current(entry, "sha256:aa", archive)


def test_index_entries_name_archives_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELROLLOUT_CACHE", str(tmp_path))
    assert catalog.archive_path("router") == tmp_path / "images" / "router.oci.tar"
    assert catalog.index_path() == tmp_path / "images" / "index.json"
    (tmp_path / "images").mkdir()
    catalog.archive_path("router").write_bytes(b"x")
    entry = catalog.compute_index_entry(catalog.find_image("router"), "sha256:aa", 10, catalog.archive_path("router"))
    assert entry["image"] == "docker.io/modelrollout/router:dev" and entry["archive_bytes"] == 1
    assert catalog.read_index(tmp_path / "missing.json") == {"images": {}}
    with pytest.raises(KeyError, match="the images are: operator, model-server, router"):
        catalog.find_image("routr")


def test_debian_arch_names_the_machine_or_says_which_are_known():
    assert catalog.debian_arch("x86_64") == "amd64"
    with pytest.raises(ValueError, match="machine 'mips' has no known Debian architecture"):
        catalog.debian_arch("mips")


def test_build_context_ignores_local_state():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"**/__pycache__", "**/*.pyc", ".venv", ".cluster"} <= set(ignored)


def test_make_images_runs_the_build_script():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^images:.*\n\timages/build\.sh", makefile, re.M)
    found = re.search(r"^\.PHONY:(.*(?:\\\n.*)*)", makefile, re.M)
    assert found, "the Makefile has a .PHONY line"
    phony = found.group(1)
    assert "images" in phony.split()


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_build_inputs_are_what_the_dockerfile_copies_from_its_context(name):
    # The build key (which lets `make images` skip buildah) must cover every COPY source, or an
    # edit to an uncovered file would leave a stale image.
    image = catalog.find_image(name)
    all_stages = stages(DOCKERFILES[name].read_text())
    if image.target:  # only the stages the target builds read the context

        def stage_name(stage):
            words = stage[0][1].split()
            return words[-1] if len(words) == 3 and words[1].upper() == "AS" else None

        wanted = {image.target}
        for stage in reversed(all_stages[1:]):
            if stage_name(stage) in wanted:
                wanted.add(stage[0][1].split()[0])
        all_stages = [s for s in all_stages[1:] if stage_name(s) in wanted]
        assert len(all_stages) == 2  # the router's `runtime` and `prebuilt`
    sources = set()
    for stage in all_stages:
        for kw, args in stage:
            if kw in ("COPY", "ADD") and not args.startswith("--from"):
                sources |= {src.rstrip("/").removeprefix("./") for src in args.split()[:-1]}
    assert sources == set(image.inputs)


def test_ignored_paths_are_the_dockerignore():
    patterns = {line for line in (ROOT / ".dockerignore").read_text().split() if line.startswith("**/")}
    assert patterns == {f"**/{n}" for n in catalog.IGNORED_NAMES} | {f"**/*{s}" for s in catalog.IGNORED_SUFFIXES}
    assert catalog.is_ignored("operator/rollout_operator/__pycache__/main.cpython-311.pyc")
    assert catalog.is_ignored("model_server/x.pyc") and catalog.is_ignored("a/modelrollout.egg-info/PKG-INFO")
    assert not catalog.is_ignored("model_server/speech_serving/models/v1.onnx")


def test_build_key_covers_every_input():
    files = {"operator/a.py": (0o644, "d1"), "README.md": (0o644, "d2")}
    args = {"BASE_IMAGE": "localhost/modelrollout-base-python:bookworm-x"}
    key = catalog.compute_build_key(b"FROM x", files, args, "sha256:base")
    assert catalog.compute_build_key(b"FROM x", dict(reversed(files.items())), args, "sha256:base") == key
    variants = [
        (b"FROM y", files, args, "sha256:base"),
        (b"FROM x", {**files, "operator/a.py": (0o644, "d3")}, args, "sha256:base"),
        (b"FROM x", {**files, "operator/a.py": (0o755, "d1")}, args, "sha256:base"),
        (b"FROM x", {**files, "operator/b.py": (0o644, "d1")}, args, "sha256:base"),
        (b"FROM x", files, {**args, "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"}, "sha256:base"),
        (b"FROM x", files, args, "sha256:other-base"),
    ]
    assert len({catalog.compute_build_key(*v) for v in variants} | {key}) == len(variants) + 1


# --- images/build.py: a bad environment is named by step (fake tools on PATH, no real build) ---

from images import build  # noqa: E402


def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_preflight_without_root_says_how_to_run(tmp_path):
    with pytest.raises(build.StepFailed, match=r"step 'preflight' failed: needs root .*sudo make images"):
        build.ensure_preflight(tmp_path, euid=1000)


def test_missing_tools_with_failing_apt_names_the_step_and_the_packages(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "apt-get", 'echo "E: Unable to locate package $5" >&2; exit 100')
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(build.StepFailed) as err:
        build.ensure_preflight(tmp_path / "logs", euid=0)
    message = str(err.value)
    assert message.startswith("images: step 'install-tools' failed: `apt-get update -qq` exited 100")
    assert "E: Unable to locate package" in message
    assert "install them yourself: apt-get install buildah skopeo debootstrap podman" in message
    assert (tmp_path / "logs" / "apt.log").is_file()


def test_missing_go_is_named(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in build.TOOLS:
        fake_tool(bin_dir, tool, "exit 0")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(build.StepFailed, match=r"step 'preflight' failed: the router binary .* `go` is not on PATH"):
        build.ensure_preflight(tmp_path, euid=0)


def test_a_failing_command_names_its_step_exit_code_log_and_last_lines(tmp_path):
    log = tmp_path / "model-server.log"
    with pytest.raises(build.StepFailed) as err:
        build.run_logged(
            "build model-server", ["sh", "-c", "echo STEP 6/8; echo 'pip: no matching distribution'; exit 3"], log
        )
    message = str(err.value)
    assert message.startswith("images: step 'build model-server' failed: `sh -c")
    assert "exited 3" in message and f"full log: {log}" in message
    assert message.endswith("STEP 6/8\npip: no matching distribution")
    assert "no matching distribution" in log.read_text()


def test_a_hanging_command_is_bounded(tmp_path):
    with pytest.raises(build.StepFailed, match=r"step 'export router' failed: `sleep 5` took longer than 0.2 s"):
        build.run_logged("export router", ["sleep", "5"], tmp_path / "x.log", timeout=0.2)


def test_a_missing_program_is_named(tmp_path):
    with pytest.raises(build.StepFailed, match=r"step 'base' failed: no-such-tool-x is not installed"):
        build.run_logged("base", ["no-such-tool-x"], tmp_path / "x.log")


def test_a_log_keeps_only_this_run(tmp_path):
    log = tmp_path / "router.log"
    log.write_text("output of an earlier run\n")
    build.run_logged("build router", ["sh", "-c", "echo first"], log)
    build.run_logged("export router", ["sh", "-c", "echo second"], log)
    text = log.read_text()
    assert "earlier run" not in text and "first" in text and "second" in text
