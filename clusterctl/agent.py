"""The code clusterctl runs on a host, started once per command and host (see remote.py) and fed
requests on stdin, one JSON object per line; it answers each with one line: {"ok": result} or
{"fail": "what went wrong"}.

Standard library only, Python 3.8+, Linux /proc. One request does one operation for every process
of the cluster on that host, so each step of ``up``/``status``/``down`` costs one round trip per
host. Processes are identified by the marker variable in their environment (inherited by their
children), never by pid alone.
"""

import json
import os
import signal
import sys
import time

# Other modules are imported where they are used: this runs on every step, on every host, and
# python's start-up is most of its cost.

MARKER = "CLUSTERCTL_PROCESS"


# A module can come from several distributions: xgboost-cpu installs the same `xgboost` module.
DISTRIBUTIONS = {"dask": ("dask",), "distributed": ("distributed",), "xgboost": ("xgboost", "xgboost-cpu")}


def _dist_infos():
    """{normalised distribution name: version} from the *.dist-info folders on sys.path: a directory
    listing, ~40 ms of CPU less per probe than importing importlib.metadata."""
    found = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and "-" in name:
                dist, version = name[:-10].rsplit("-", 1)
                found.setdefault(dist.lower().replace("_", "-").replace(".", "-"), version)
    return found


def _version(module, infos=None):
    if infos:
        for dist in DISTRIBUTIONS[module]:
            if dist in infos:
                return infos[dist]
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - python < 3.8
        return None
    for dist in DISTRIBUTIONS[module]:
        try:
            return metadata.version(dist)
        except Exception:
            continue
    return None


def _importable(module):
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except Exception:
        return False


def _markers():
    """pid -> marker value, for every process on this host that carries one."""
    found = {}
    needle = (MARKER + "=").encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                env = f.read()
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2:][:1] == b"Z":
            continue  # a zombie is already dead; its parent reaps it
        for item in env.split(b"\0"):
            if item.startswith(needle):
                found[int(entry)] = item[len(needle):].decode("utf-8", "replace")
                break
    return found


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _listening_inodes(port):
    """Socket inodes listening on a TCP port, on any address (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                        inodes.add(parts[9])
        except (OSError, StopIteration):
            continue
    return inodes


def _port_holder(inodes):
    """'pid N: command' of the process owning one of the sockets, or '' if it cannot be seen."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir("/proc/%s/fd" % entry):
                link = os.readlink("/proc/%s/fd/%s" % (entry, fd))
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return "pid %s: %s" % (entry, _cmdline(int(entry))[:200])
        except OSError:
            continue
    return ""


def _no_listener(port):
    """Whether nothing listens on ``port``, on any address, known without /proc/net/tcp (reading it
    walks the kernel's whole TCP table: ~4 ms a file here, even in an empty network namespace):
    Linux lets a socket with SO_REUSEADDR bind the wildcard address of its family unless a socket
    listens on that port (any address of the family; IPv6's also IPv4's unless v6-only) or is bound
    there without SO_REUSEADDR. False when that bind fails for any reason: then the caller looks."""
    import socket

    for family, wildcard in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            if family == socket.AF_INET6:
                continue  # no IPv6 here: nothing can listen on it
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((wildcard, port))
        except OSError:
            return False
        finally:
            sock.close()
    return True


def _port_free(host, port):
    """(free, why not). A listener on the port, any address, makes it busy; the bind test only
    checks that ``host`` is an address of this machine (SO_REUSEADDR ignores TIME_WAIT leftovers)."""
    import socket

    inodes = () if _no_listener(port) else _listening_inodes(port)
    if inodes:
        return False, _port_holder(inodes) or "held by a process this user cannot see"
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return True, ""
        except socket.gaierror:
            continue
        except OSError as exc:
            if exc.errno == 99:  # EADDRNOTAVAIL: not an address of this host for this family
                continue
            return False, exc.strerror or str(exc)
        finally:
            sock.close()
    return False, "%s is not an address of this host" % host


def op_probe(req):
    """Interpreter and package versions, free ports, and which recorded processes still run; then
    holds the processes in ``hold`` (see _hold) that are not still running."""
    import socket

    alive = _alive(req.get("check", []))
    infos = _dist_infos()
    ports = {}
    for port in req.get("ports", []):
        free, why = _port_free(req.get("bind", ""), port)
        ports[str(port)] = None if free else why
    _hold(req.get("hold", []), alive)
    return {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "executable": sys.executable,
        "hostname": socket.gethostname(),
        "packages": {name: (_version(name, infos) if _importable(name) else None)
                     for name in DISTRIBUTIONS},
        "ports": ports,
        "alive": alive,
    }


def _alive(procs):
    markers = _markers() if procs else {}
    out = {}
    for proc in procs:
        pids = [pid for pid, value in markers.items() if value == proc["dir"]]
        out[proc["name"]] = {"alive": proc.get("pid") in pids, "pids": sorted(pids)}
    return out


def _write(path, text, mode):
    """Write a file whole (a reader never sees half of it) with ``mode``, its folder private."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    # Unique: hosts that share the folder (NFS, the test lab) may write the same file at once.
    tmp = "%s.%s.tmp" % (path, os.urandom(8).hex())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def op_write(req):
    """Write files ({path, text, mode}); {path: error} for those that could not be written."""
    failed = {}
    for f in req["files"]:
        try:
            _write(f["path"], f["text"], f.get("mode", 0o600))
        except OSError as exc:
            failed[f["path"]] = "cannot write %s: %s" % (f["path"], exc.strerror or exc)
    return {"failed": failed}


# How a Dask process starts (``python -c BOOT -m dask <command> ...``; the code is in its environment,
# so that its command line stays short and on one line): it imports what its command needs
# (most of its start-up; an import that fails is left to ``python -m dask``, which says why in the
# log), then runs the command as ``python -m dask`` would. A held one (see op_probe) waits, between
# the two, for one line on stdin: "go" runs it; anything else (end of file: the agent is gone) ends
# it, having bound no port and written no file.
# What this start costs less than ``python -m dask``'s own (~0.1 of ~0.5 s of CPU here):
#  - the garbage collector is off, and what they made is then frozen (gc.freeze: never walked again,
#    here or in the worker a nanny forks): the ~170 collections they would trigger, each walking
#    everything imported so far, were ~15 % of their CPU; the price is their own cyclic garbage,
#    never freed (~730 objects, ~0.15 MB);
#  - Dask reads its configuration's YAML files (its defaults, ~/.config/dask) with PyYAML's
#    libyaml loader where PyYAML has one (same documents, same objects; ~0.02 s less than the pure
#    Python one), restored when the imports are done;
#  - the command runs as the ``dask`` command group would run it (same command object, same
#    context settings) without the group's search of every installed package for ``dask_cli``
#    entry points (~7 ms).
START = """\
import gc, os, sys
gc.disable()
main = None
try:
    import yaml
    safe_load, loader = yaml.safe_load, getattr(yaml, "CSafeLoader", None)
    if loader is not None:
        yaml.safe_load = lambda stream: yaml.load(stream, loader)
    try:
        command = __import__("distributed.cli.dask_" + sys.argv[3], fromlist=["main"])
        from dask.cli import CONTEXT_SETTINGS
        main = command.main
    finally:
        yaml.safe_load = safe_load
except Exception:
    pass
gc.freeze()
gc.enable()
if os.environ.pop("CLUSTERCTL_HELD", None):
    if sys.stdin.readline() != "go\\n":
        os._exit(0)
    f = os.open(os.devnull, os.O_RDONLY)
    os.dup2(f, 0)
    os.close(f)
sys.argv = sys.argv[2:]
if main is None:
    import runpy
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    main(args=sys.argv[2:], prog_name="dask " + sys.argv[1], **CONTEXT_SETTINGS)
"""
BOOT = "import os;exec(os.environ.pop('CLUSTERCTL_START'))"
_HELD = {}  # process name -> (Popen, its request): held by this session's probe, not started yet


def _dask(argv):
    """Whether ``argv`` is ``python -m dask scheduler|worker ...`` (started through START)."""
    return len(argv) > 3 and argv[1:3] == ["-m", "dask"] and argv[3] in ("scheduler", "worker")


def _spawn(proc, hold=False):
    """Start ``proc``; ``hold``: as a held process (see START)."""
    import subprocess

    os.makedirs(proc["dir"], exist_ok=True)
    log = open(os.path.join(proc["dir"], "log"), "ab")
    try:
        if not hold:
            _header(log, proc)
        env = dict(proc.get("env_default", {}))
        env.update(os.environ)
        env.update(proc.get("env", {}))
        env[MARKER] = proc["dir"]
        argv = proc["argv"]
        if _dask(argv):
            env["CLUSTERCTL_START"] = START
            argv = [argv[0], "-c", BOOT] + argv[1:]
            if hold:
                env["CLUSTERCTL_HELD"] = "1"
        return subprocess.Popen(argv, cwd=proc["dir"], env=env,
                                stdin=subprocess.PIPE if hold else subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _header(log, proc):
    log.write(("--- clusterctl: starting %s at %s ---\n" % (proc["name"], time.strftime("%Y-%m-%d %H:%M:%S"))).encode())
    log.flush()


def _hold(procs, alive):
    """Start, held, the processes ``up`` will start here if the preflight passes on every host: their
    imports run while the other hosts are still being checked. Only by the agent a login started
    for this command (the processes get that login's environment), never the resident one."""
    if _RESIDENT:
        return
    for proc in procs:
        # Something of it still runs: kept, or stopped before the start (which would end a held one too).
        if alive.get(proc["name"], {}).get("pids") or proc["name"] in _HELD or not _dask(proc["argv"]):
            continue
        try:
            _HELD[proc["name"]] = (_spawn(proc, hold=True), proc)
        except OSError:
            pass  # the start will say why


def _go(proc):
    """The held process for ``proc``, told to run; None if there is none (or it is not this one)."""
    held = _HELD.pop(proc["name"], None)
    if held is None:
        return None
    child, asked = held
    same = all(asked.get(k) == proc.get(k) for k in ("dir", "argv", "env", "env_default"))
    try:
        if same and child.poll() is None:
            with open(os.path.join(proc["dir"], "log"), "ab") as log:
                _header(log, proc)
            child.stdin.write(b"go\n")
            child.stdin.close()
            return child
    except OSError:
        pass
    _release([held])
    return None


def _release(held):
    """End held processes that will not be started."""
    for child, _ in held:
        try:
            child.kill()
        except OSError:
            pass
        child.wait()


def _release_all():
    held = [_HELD.pop(name) for name in list(_HELD)]
    _release(held)
    return len(held)


def op_release(req):
    """End the held processes (the preflight failed elsewhere): gone when this answers."""
    return {"released": _release_all()}


def op_start(req):
    failed = op_write({"files": req.get("files", [])})["failed"]  # e.g. TLS certificates
    if failed:
        said = "; ".join(failed.values())
        return {"started": {proc["name"]: {"error": said} for proc in req["procs"]}}
    if req.get("resident"):
        # Started when this session ends (see serve): its interpreter's start-up does not compete
        # with the processes' imports for the CPU.
        _AFTER[req["resident"]["socket"]] = req["resident"]
    started = {}
    for proc in req["procs"]:
        for path in proc.get("clear", []):  # e.g. a scheduler file of the scheduler being replaced
            try:
                os.remove(path)
            except OSError:
                pass
        try:
            child = _go(proc) or _spawn(proc)
            started[proc["name"]] = {"pid": child.pid}
        except OSError as exc:
            started[proc["name"]] = {"error": "%s: %s" % (exc.strerror or exc, exc.filename or proc["dir"])}
    _release_all()  # not wanted by this start
    return {"started": started}


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


CHILD_GRACE = 0.5  # seconds a nanny's child gets after SIGTERM (see op_stop)


def _wait_gone(ours, seconds):
    deadline = time.time() + seconds
    while ours() and time.time() < deadline:
        time.sleep(0.02)


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[1])


def op_stop(req):
    """SIGTERM what was started, SIGKILL whatever carries a marker after the grace period, verify."""
    dirs = {proc["dir"]: proc["name"] for proc in req.get("procs", [])}
    prefix = req.get("prefix")

    me = os.getpid()

    def ours():
        return {pid: value for pid, value in _markers().items()
                if pid != me and (value in dirs or (prefix and value.startswith(prefix)))}

    targets = ours()
    # A resident agent of this cluster (see listen) is stopped by a sweep like any other process,
    # but it is not one of the cluster's processes: it is not reported.
    agents = {pid for pid, value in targets.items() if _is_agent(value)}
    # SIGTERM to the processes whose parent is not one of ours (the started ones, and any left
    # without their parent); a child is left to its parent: a nanny closes its worker in ~0.1 s.
    # A forked worker does not act on a SIGTERM of its own (it inherits the nanny's handler, which
    # does nothing in the child) and delays its nanny's close when it gets one.
    tops = [pid for pid in targets if _parent(pid) not in targets]
    _signal(tops, signal.SIGTERM)
    grace = req.get("grace", 10)
    # Children still there after a moment (a nanny whose worker was already closing waits 8 s
    # for it) are killed, so that their parent can finish at once; the others keep the rest of
    # the grace period.
    _wait_gone(ours, min(CHILD_GRACE, grace))
    _signal([pid for pid in ours() if pid not in tops], signal.SIGKILL)
    _wait_gone(ours, grace - min(CHILD_GRACE, grace))
    killed = ours()
    if killed:
        _signal(list(killed), signal.SIGKILL)
        deadline = time.time() + 5
        while ours() and time.time() < deadline:
            time.sleep(0.05)
    left = ours()
    if not left:  # nothing of the cluster runs here any more: its keys need not stay either
        import shutil

        for path in req.get("remove", []):
            shutil.rmtree(path, ignore_errors=True)
    exited = False
    leave = req.get("leave")
    if leave and not left:
        rest = _cluster(leave)
        if all(_is_agent(value) for value in rest.values()):
            # Nothing of the cluster runs here any more: its resident agent goes too (see listen).
            _signal(list(rest), signal.SIGTERM)
            _wait_gone(lambda: set(rest) & set(_markers()), 2)
            _signal(set(rest) & set(_markers()), signal.SIGKILL)
            exited = _RESIDENT.get("root") == leave
    return {
        "stopped": sorted({value for pid, value in targets.items() if pid not in agents}),
        "killed": sorted({value for pid, value in killed.items() if pid not in agents}),
        "left": [{"pid": pid, "dir": value, "cmd": _cmdline(pid)[:200]} for pid, value in left.items()
                 if pid not in agents],
        "exited": exited,
    }


def _tail(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 200 * n - 4096))
            data = f.read()
    except OSError as exc:
        return "(no log: %s)" % (exc.strerror or exc)
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-n:])


def op_tail(req):
    return {"tails": {path: _tail(path, req.get("lines", 20)) for path in req["files"]}}


def op_alive(req):
    """Only which of the given processes still run: the cheap check made while waiting."""
    return {"alive": _alive(req["check"])}


def _reach(host, port, timeout):
    """'listening' | 'refused' (the host answers, nothing listens) | 'timeout' | an error text."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "listening"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return exc.strerror or str(exc)


def op_doctor(req):
    """The probe, plus this host's clock, free memory and disk, and whether it reaches the scheduler."""
    out = op_probe(req)
    out["time"] = time.time()
    try:
        import psutil

        out["mem_available"] = psutil.virtual_memory().available
        out["mem_total"] = psutil.virtual_memory().total
    except Exception:  # psutil comes with distributed; without it, /proc/meminfo
        out["mem_available"] = out["mem_total"] = None
        try:
            with open("/proc/meminfo") as f:
                info = dict(line.split(":", 1) for line in f)
            out["mem_available"] = int(info["MemAvailable"].split()[0]) * 1024
            out["mem_total"] = int(info["MemTotal"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            pass
    path = req.get("workdir") or "/"
    while path and not os.path.exists(path):  # the workdir may not exist yet: its nearest parent
        path = os.path.dirname(path.rstrip("/")) or "/"
    try:
        st = os.statvfs(path)
        out["disk_free"], out["disk_path"] = st.f_bavail * st.f_frsize, path
    except OSError as exc:
        out["disk_free"], out["disk_path"] = None, "%s: %s" % (path, exc.strerror)
    target = req.get("reach")
    out["reach"] = _reach(target[0], target[1], req.get("reach_timeout", 3)) if target else None
    return out


# The resident agent: asked for by ``start`` on an SSH host, started when that session ends if the
# cluster runs there (its start-up then does not slow the processes' own), it
# listens on a Unix socket in the cluster's folder, which clusterctl reaches through its SSH
# connection (a direct-streamlocal channel: no login shell, no python start). Later commands ask
# it instead of starting an agent. It answers the same requests, plus ``hello`` (its source's
# hash and interpreter: a client of another version uses a fresh agent instead), and leaves when
# a ``stop`` with ``leave`` leaves nothing of the cluster on the host (or on SIGTERM), or when
# nothing of the cluster has run there for IDLE_EXIT seconds. It carries the marker
# (``<root>.agent-<host>-<interpreter hash>``), so a sweep of the cluster's folder by any agent
# stops it too. It starts no process: ``start`` always goes to an agent of the command's login.

_RESIDENT = {}  # in the resident agent: its root, socket, hash, python, interpreter file
_AFTER = {}  # socket -> the resident agent a start asked for, started when the session ends
IDLE_EXIT = 60.0
AGENT_TAG = ".agent-"


def _is_agent(value):
    return os.path.basename(value).startswith(AGENT_TAG)


def _cluster(root):
    """pid -> marker of the cluster's processes on this host (agents too), this one left out."""
    me = os.getpid()
    return {pid: value for pid, value in _markers().items() if pid != me and value.startswith(root)}


def _digest(source):
    """The version of the agent's source, as ``hello`` says it (remote.agent_hash)."""
    import hashlib

    return hashlib.sha256(source).hexdigest()[:16]


def _ask(path, request, timeout=2.0):
    """One request to the agent listening at ``path``; None if none answers."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            with sock.makefile("rb") as f:
                return json.loads(f.readline()).get("ok")
    except (OSError, ValueError, AttributeError):
        return None


def _start_resident(req):
    """Start the resident agent, from this agent's own source (SOURCE, see remote.BOOT), if
    something of the cluster runs here (a rollback may have stopped it since) and no agent of this
    version answers already; one of another version is replaced. Best effort: without it, commands
    start an agent as before."""
    import subprocess

    source = globals().get("SOURCE")
    try:
        if source is None or all(_is_agent(value) for value in _cluster(req["root"]).values()):
            return
        hello = _ask(req["socket"], {"op": "hello"})
        if hello and hello.get("hash") == _digest(source) and hello.get("python") == req["python"]:
            return
        if hello and hello.get("pid"):  # another version: it leaves (its socket first), this one takes over
            _signal([hello["pid"]], signal.SIGTERM)
            _wait_gone(lambda: os.path.exists("/proc/%d" % hello["pid"]), 2)
            _signal([hello["pid"]], signal.SIGKILL)  # one that did not (hung, or deaf to SIGTERM) is not left
        _write(req["file"], source.decode(), 0o600)
        base = req["socket"][:-len(".sock")]
        with open(base + ".log", "ab") as log:
            env = dict(os.environ)
            env[MARKER] = base
            subprocess.Popen([sys.executable, req["file"], "listen", req["socket"], req["root"], req["python"]],
                             cwd=req["root"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    except Exception:
        pass


def _interpreter():
    """The file this interpreter was started from, as (path, inode, mtime): another python put at
    the same path (a venv made again, an upgrade) gives another."""
    try:
        path = os.path.realpath(sys.executable)
        st = os.stat(path)
        return [path, st.st_ino, st.st_mtime_ns]
    except OSError:
        return None


def op_hello(req):
    # An agent whose interpreter was replaced since it started no longer claims to be the
    # inventory's: it would report the old python's version. The caller starts a fresh agent, and
    # the next start replaces this one.
    same = _RESIDENT.get("interpreter") == _interpreter()
    return {"hash": _RESIDENT.get("hash"), "python": _RESIDENT.get("python") if same else None, "pid": os.getpid()}


OPS = {"doctor": op_doctor, "probe": op_probe, "alive": op_alive, "start": op_start, "stop": op_stop, "tail": op_tail,
       "write": op_write, "hello": op_hello,
       "release": op_release}


def serve(stdin=None, out=None):
    """Answer requests, one JSON line each way, until stdin closes (or, in the resident agent, until
    a request leaves it nothing to do: then it exits); then start the resident agent a ``start``
    asked for."""
    stdin = stdin or sys.stdin.buffer
    out = out or sys.stdout.buffer
    for line in iter(stdin.readline, b""):
        try:
            req = json.loads(line)
            answer = {"ok": OPS[req["op"]](req)}
        except Exception as exc:  # said to the caller, who names the host and the step
            answer = {"fail": "%s: %s" % (type(exc).__name__, exc)}
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()
        ok = answer.get("ok")
        if _RESIDENT and isinstance(ok, dict) and ok.get("exited"):
            _leave()
    _release_all()  # the preflight failed, or the command ended
    for resident in _AFTER.values():
        _start_resident(resident)


def _leave():
    """The resident agent's end: its socket goes first, so no new client finds it, then its log if
    nothing was written there."""
    base = _RESIDENT["socket"][:-len(".sock")]
    try:
        if os.stat(_RESIDENT["socket"]).st_ino == _RESIDENT["inode"]:
            os.remove(_RESIDENT["socket"])
    except OSError:
        pass
    try:
        if os.path.getsize(base + ".log") == 0:
            os.remove(base + ".log")
    except OSError:
        pass
    os._exit(0)


def listen(path, root, python, idle=IDLE_EXIT):
    """The resident agent: serve each connection of this user on the Unix socket ``path`` (see above)."""
    import socket
    import struct
    import threading

    idle = float(idle)
    with open(os.path.abspath(__file__), "rb") as f:
        source = f.read()
    _RESIDENT.update(socket=path, root=root, python=python, hash=_digest(source),
                     interpreter=_interpreter())
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.remove(path)  # a socket left by an agent that died: nobody answers on it
    except OSError:
        pass
    umask = os.umask(0o077)  # the socket is private from its first moment (its folder is 0700 too)
    try:
        server.bind(path)
    finally:
        os.umask(umask)
    os.chmod(path, 0o600)
    _RESIDENT["inode"] = os.stat(path).st_ino
    signal.signal(signal.SIGTERM, lambda *_: _leave())
    server.listen(16)
    server.settimeout(1.0)
    busy = [0, time.time()]  # connections open, last time one was or something of the cluster ran
    lock = threading.Lock()

    def handle(conn):
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII"))
            if struct.unpack("iII", creds)[1] not in (os.getuid(), 0):  # struct ucred: pid, uid, gid
                return
            with conn.makefile("rb") as rfile, conn.makefile("wb") as wfile:
                serve(rfile, wfile)
        except OSError:
            pass
        finally:
            conn.close()
            with lock:
                busy[0] -= 1
                busy[1] = time.time()

    while True:
        try:
            conn, _ = server.accept()
        except socket.timeout:
            with lock:
                if busy[0]:
                    busy[1] = time.time()
                elif time.time() - busy[1] > idle:  # then (only) look for the cluster's processes
                    if any(not _is_agent(value) for value in _cluster(root).values()):
                        busy[1] = time.time()
                    else:
                        _leave()
            continue
        with lock:
            busy[0] += 1
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__clusterctl_agent__":
    serve()
elif __name__ == "__main__" and sys.argv[1:2] == ["listen"]:
    listen(*sys.argv[2:6])
