"""`clusterctl inventory check` and `inventory export`: no host is contacted."""

from __future__ import annotations

import json

import yaml

INVENTORY = """\
name: prod
defaults:
  user: dask
  identity_file: {key}
  python: /opt/venv/bin/python
scheduler:
  host: 10.0.0.1
workers:
  - host: 10.0.0.2
    port: 2222
    nworkers: 2
    nthreads: 4
  - host: 127.0.0.1
    connection: local
"""


def write(tmp_path, text=INVENTORY):
    key = tmp_path / "key"
    key.write_text("not read: only its presence is checked\n")
    key.chmod(0o600)
    path = tmp_path / "inv.yaml"
    path.write_text(text.format(key=key))
    return path


def test_check_says_valid_or_lists_every_problem_with_its_line(cli, tmp_path):
    path = write(tmp_path)
    ok = cli("inventory", "check", path)
    assert ok.code == 0 and ok.out.strip() == f"{path}: valid: cluster prod, scheduler on 10.0.0.1, 3 worker(s) on 2 host(s)"
    assert cli("inventory", "check", path, "--json").json == {"inventory": str(path), "valid": True,
                                                             "cluster": "prod", "hosts": 3, "workers": 3}
    bad = write(tmp_path, INVENTORY.replace("port: 2222", "port: 0").replace("nthreads: 4", "nthreads: many"))
    said = cli("inventory", "check", bad)
    assert said.code == 2 and f"{bad}:10: workers[0].port" in said.err and f"{bad}:12: workers[0].nthreads" in said.err


def test_export_ansible_has_both_groups_with_connection_and_dask_settings(cli, tmp_path):
    path = write(tmp_path)
    out = cli("inventory", "export", path, "--format", "ansible")
    assert out.code == 0, out.err
    top = yaml.safe_load(out.out)["all"]
    assert top["vars"] == {"clusterctl_cluster": "prod"}
    scheduler = top["children"]["scheduler"]["hosts"]
    workers = top["children"]["workers"]["hosts"]
    assert list(scheduler) == ["10.0.0.1"] and sorted(workers) == ["10.0.0.2_2222", "127.0.0.1"]
    remote = workers["10.0.0.2_2222"]
    assert remote["ansible_host"] == "10.0.0.2" and remote["ansible_port"] == 2222
    assert remote["ansible_user"] == "dask" and remote["ansible_ssh_private_key_file"] == str(tmp_path / "key")
    assert remote["ansible_python_interpreter"] == "/opt/venv/bin/python"
    assert remote["clusterctl_nworkers"] == 2 and remote["clusterctl_nthreads"] == 4
    assert workers["127.0.0.1"]["ansible_connection"] == "local"
    assert scheduler["10.0.0.1"]["clusterctl_port"] == 8786


def test_export_json_is_the_inventory_with_defaults_filled_in(cli, tmp_path):
    path = write(tmp_path)
    data = json.loads(cli("inventory", "export", path, "--format", "json").out)
    assert data["name"] == "prod" and data["scheduler"]["port"] == 8786 and data["tls"]["mode"] == "auto"
    assert [w["host"]["address"] for w in data["workers"]] == ["10.0.0.2", "127.0.0.1"]
    assert data["workers"][0]["workdir"] == "/tmp/clusterctl-dask"


def test_export_refuses_an_unknown_format_and_needs_a_cluster_without_a_file(cli, tmp_path):
    bad = cli("inventory", "export", write(tmp_path), "--format", "xml")
    assert bad.code == 2 and "--format: must be one of json, ansible (got 'xml')" in bad.err
    none = cli("inventory", "export")
    assert none.code != 0 and "clusterctl up" in none.err


def test_export_ansible_carries_the_jump_host_as_proxyjump(cli, tmp_path):
    path = write(tmp_path, INVENTORY.replace("  python: /opt/venv/bin/python\n",
                                             "  python: /opt/venv/bin/python\n  jump: admin@bastion:2200\n")
                                     .replace("    nthreads: 4\n", "    nthreads: 4\n    jump: none\n"))
    out = cli("inventory", "export", path, "--format", "ansible")
    assert out.code == 0, out.err
    top = yaml.safe_load(out.out)["all"]["children"]
    assert top["scheduler"]["hosts"]["10.0.0.1"]["ansible_ssh_common_args"] == "-o ProxyJump=admin@bastion:2200"
    workers = top["workers"]["hosts"]
    assert workers["10.0.0.2_2222"]["ansible_ssh_common_args"] == "-o ProxyJump=none"
    assert "ansible_ssh_common_args" not in workers["127.0.0.1"]
    data = json.loads(cli("inventory", "export", path, "--format", "json").out)
    assert data["scheduler"]["host"]["jump"] == "admin@bastion:2200" and data["workers"][1]["host"]["jump"] is None
