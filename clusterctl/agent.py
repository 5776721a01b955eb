"""The program clusterctl runs on a host: started once per command and host (see agent_session.py),
its source read from stdin, then fed requests on the same stdin, one JSON object per line; it
answers each with one line: {"ok": result} or {"fail": "what went wrong"}.

Standard library only, Python 3.8+, Linux /proc. One request does one operation for every process
of the cluster on that host, so each step of ``up``/``status``/``down`` costs one round trip per
host. Processes are identified by the marker variable in their environment (inherited by their
children), never by pid alone.
"""

import json
import os
import signal
import socket
import sys
import time

#: Every process clusterctl starts carries this variable, set to its own directory. Its children
#: inherit it, so a scan of a host's /proc finds everything a process left behind, by name.
MARKER = "CLUSTERCTL_PROCESS"

#: The packages whose versions must agree between the client and the hosts. A module can come
#: from several distributions: xgboost-cpu installs the same ``xgboost`` module.
DISTRIBUTIONS = {"dask": ("dask",), "distributed": ("distributed",), "xgboost": ("xgboost", "xgboost-cpu")}


def package_versions():
    """{module: version or None} for DISTRIBUTIONS, as this interpreter would import them."""
    from importlib import metadata

    found = {}
    for module, dists in DISTRIBUTIONS.items():
        found[module] = None
        for dist in dists:
            try:
                found[module] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


# -- processes on this host -------------------------------------------------------------------------

def _markers():
    """pid -> marker value, for every live process on this host that carries one."""
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


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[1])


def _alive(procs):
    """name -> {"alive": the recorded pid still runs, "pids": every pid carrying its marker}, and
    for a process given ``ports``: "ports": {port: who listens there if not the process itself}."""
    markers = _markers() if procs else {}
    out = {}
    for proc in procs:
        pids = [pid for pid, value in markers.items() if value == proc["dir"]]
        out[proc["name"]] = {"alive": proc.get("pid") in pids, "pids": sorted(pids)}
        if proc.get("ports"):
            out[proc["name"]]["ports"] = {str(port): _listener(port, pids) for port in proc["ports"]}
    return out


# -- ports ------------------------------------------------------------------------------------------

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


def _listener(port, pids):
    """'' when one of ``pids`` listens on ``port``; else who does ('pid N: command'), or why not known."""
    inodes = _listening_inodes(port)
    if not inodes:
        return "nothing listens on it"
    for pid in pids:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return ""
        except OSError:
            continue
    return _port_holder(inodes) or "held by a process this user cannot see"


def _port_free(host, port):
    """(free, why not). A listener on the port, on any address, makes it busy; the bind test checks
    that ``host`` is an address of this machine (SO_REUSEADDR ignores TIME_WAIT leftovers)."""
    inodes = _listening_inodes(port)
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


# -- the cluster's folder ---------------------------------------------------------------------------

#: A file in every cluster's folder on a host, holding the cluster's name: how a cluster finds out
#: that its folder lies inside another's, or holds one.
CLUSTER_FILE = ".clusterctl-cluster"


def _unsafe(root):
    """Why the cluster's folder ``<workdir>/<cluster>/`` cannot be trusted, or ''. The workdir and the
    folder (made by clusterctl) must be this user's, writable by nobody else, and not symbolic links;
    the existing folders above them must belong to root or this user and be writable by nobody else
    unless sticky (like /tmp). Anyone else who can write there could plant a link or swap a file."""
    import stat

    uid = os.geteuid()
    root = root.rstrip("/")
    workdir = os.path.dirname(root)
    if not os.path.isabs(root):
        return "%s is not an absolute path" % root
    for path in (root, workdir):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            return "%s is a symbolic link: use a real folder of your own" % path
        if not stat.S_ISDIR(st.st_mode):
            return "%s is not a folder" % path
        if st.st_uid != uid:
            return "%s belongs to uid %d, not to this user (uid %d): remove it or choose another workdir" % (
                path, st.st_uid, uid)
        if st.st_mode & 0o022:
            return "%s can be written by other users (mode %o): chmod go-w it, or choose another workdir" % (
                path, stat.S_IMODE(st.st_mode))
    parent = os.path.dirname(workdir)
    while True:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            parent = os.path.dirname(parent)
            continue
        if st.st_uid not in (0, uid):
            return "%s, above the workdir, belongs to uid %d: choose a workdir in a folder of your own" % (
                parent, st.st_uid)
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return "%s, above the workdir, can be written by other users: choose another workdir" % parent
        if parent == "/":
            return ""
        parent = os.path.dirname(parent)


def _nested(root):
    """Another cluster's folder around this one or inside it (down would mix them up), or ''."""
    root = root.rstrip("/")
    path = os.path.dirname(root)
    while path != "/":
        other = _cluster_in(path)
        if other is not None:
            return "%s lies inside the folder of cluster %s (%s)" % (root, other, path)
        path = os.path.dirname(path)
    for top, dirs, files in os.walk(root):
        if top != root and CLUSTER_FILE in files:
            return "%s holds the folder of cluster %s (%s)" % (root, _cluster_in(top), top)
        if top.count("/") - root.count("/") >= 2:
            dirs[:] = []
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
    return ""


def _cluster_in(path):
    try:
        with open(os.path.join(path, CLUSTER_FILE)) as f:
            return f.read().strip() or "?"
    except OSError:
        return None


def _cluster_of(path):
    """The cluster folder (``<workdir>/<cluster>/``, holding CLUSTER_FILE, this user's) that ``path``
    lies in once its links are resolved, or None. What the agent reads is confined to such folders."""
    d = os.path.dirname(os.path.realpath(path))
    uid = os.geteuid()
    while True:
        mark = os.path.join(d, CLUSTER_FILE)
        try:
            if os.path.isfile(mark) and not os.path.islink(mark) and os.stat(d).st_uid == uid:
                return d.rstrip("/") + "/"
        except OSError:
            pass
        if d in ("/", ""):
            return None
        d = os.path.dirname(d)


def _under(path, roots):
    """Whether ``path``, its links resolved, lies inside one of the folders ``roots``."""
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(root).rstrip("/") + "/") for root in roots)


class Refused(Exception):
    """A request outside what the agent does: the cluster's folders and the processes it started."""


def _confine(paths, roots=()):
    """Raise ``Refused`` for a path that is neither in a cluster folder nor in one of ``roots``."""
    for path in paths:
        if not os.path.isabs(path) or not (_under(path, roots) or _cluster_of(path)):
            raise Refused("%s is not in a clusterctl cluster folder: the agent reads and writes only there" % path)


def _readable(path):
    """'' when the agent may give out ``path``: in a cluster folder, and not a key (a ``tls`` folder)."""
    root = _cluster_of(path)
    if root is None:
        return "%s is not in a clusterctl cluster folder" % path
    if "tls" in os.path.relpath(os.path.realpath(path), os.path.realpath(root)).split(os.sep):
        return "%s is a certificate or key: the agent does not give those out" % path
    return ""


def _foreign(root, name):
    """Why ``root`` cannot become the folder of cluster ``name``, or '': it must be named after the
    cluster and be new, empty or already a cluster's (not a home folder that a request calls a root)."""
    folder = root.rstrip("/")
    if os.path.basename(folder) != name:
        return "%s is not named after the cluster %s" % (folder, name)
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return "%s: %s" % (folder, exc.strerror or exc)
    # Hosts that share the folder (NFS, the test lab) claim it at once: another one's marker may be
    # half written (see _write), and the folder is then the cluster's all the same.
    entries = [e for e in entries if not (e.startswith(CLUSTER_FILE + ".") and e.endswith(".tmp"))]
    if entries and CLUSTER_FILE not in entries:
        return "%s exists and is not a clusterctl cluster folder: remove it or choose another workdir" % folder
    return ""


def _claim(roots):
    """Check the cluster folders ``roots`` ({root: cluster name}) as up does, then mark each as the
    cluster's (making it if new); what went wrong, or ''."""
    said = ["cannot use %s: %s" % (root, why) for root, why in _folder_problems(roots).items()]
    for root, name in roots.items() if not said else ():
        try:
            _write(os.path.join(root, CLUSTER_FILE), name + "\n", 0o600)
        except OSError as exc:
            said.append("cannot write %s: %s" % (os.path.join(root, CLUSTER_FILE), exc.strerror or exc))
    return "; ".join(said)


def _folder_problems(roots):
    """{root: why it cannot be used} for the cluster folders ``roots`` ({root: cluster name})."""
    found = {}
    for root in roots:
        why = _unsafe(root) or _foreign(root, roots[root]) or _nested(root)
        if why:
            found[root] = why
    return found


# -- operations -------------------------------------------------------------------------------------

def op_probe(req):
    """Interpreter and package versions, free ports, and which recorded processes still run."""
    ports = {}
    for port in req.get("ports", []):
        free, why = _port_free(req.get("bind", ""), port)
        ports[str(port)] = None if free else why
    return {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "executable": sys.executable,
        "hostname": socket.gethostname(),
        "packages": package_versions(),
        "ports": ports,
        "alive": _alive(req.get("check", [])),
        "folders": _folder_problems(req.get("roots", {})),
    }


def op_alive(req):
    """Only which of the given processes still run: the cheap check made while waiting."""
    return {"alive": _alive(req["check"])}


def _write(path, text, mode):
    """Write a file whole (a reader never sees half of it) with ``mode``, its folder private."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    # Unique: hosts that share the folder (NFS, the test lab) may write the same file at once.
    tmp = "%s.%s.tmp" % (path, os.urandom(8).hex())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
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
    """Write files ({path, text, mode}) in cluster folders; {path: error} for those that could not be
    written. ``roots`` ({root: cluster name}): cluster folders to make first, checked as up does."""
    roots = req.get("roots", {})
    _confine([f["path"] for f in req["files"]], roots)
    said = _claim(roots)
    if said:
        return {"failed": {f["path"]: said for f in req["files"]}}
    failed = {}
    for f in req["files"]:
        try:
            _write(f["path"], f["text"], f.get("mode", 0o600))
        except OSError as exc:
            failed[f["path"]] = "cannot write %s: %s" % (f["path"], exc.strerror or exc)
    return {"failed": failed}


def _spawn(proc):
    """Start ``proc`` detached: its own session, stdin from /dev/null, output appended to its log,
    the marker in its environment. Its command line is the one the spec built, unchanged."""
    import subprocess

    os.makedirs(proc["dir"], exist_ok=True)
    with open(os.path.join(proc["dir"], "log"), "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(("--- clusterctl: starting %s at %s ---\n" % (proc["name"], stamp)).encode())
        log.flush()
        env = dict(proc.get("env_default", {}))  # what the host's login environment has not set
        env.update(os.environ)
        env.update(proc.get("env", {}))
        env[MARKER] = proc["dir"]
        return subprocess.Popen(proc["argv"], cwd=proc["dir"], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _this_python(program, proc):
    """Whether ``program`` is the interpreter this agent's session started it as (the last word of
    its command line: ``python3``, a venv's, a wrapper script), or the same file (a link to it)."""
    import shutil

    if len(sys.argv) < 3:  # started without naming its interpreter: it starts nothing
        return False
    named = sys.argv[2]
    if program == named:
        return True
    env = {**proc.get("env_default", {}), **os.environ, **proc.get("env", {})}  # as _spawn makes it
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    mine = shutil.which(named)  # as the login shell found it
    try:
        return found is not None and mine is not None and os.path.samefile(found, mine)
    except OSError:
        return False


def _allowed(proc, roots):
    """Raise ``Refused`` unless ``proc`` is what clusterctl starts: ``PYTHON -m dask scheduler|worker``
    in a folder of its own directly in one of the request's cluster folders, or a job's driver
    ``PYTHON -m clusterctl.driver DIR`` in ``<root>jobs/<id>``."""
    argv, d = proc["argv"], os.path.normpath(proc["dir"])
    if not _this_python(argv[0], proc):
        raise Refused("will not start %r: %s is not the python this agent runs with (%s)" % (
            " ".join(argv)[:200], argv[0], sys.executable))
    parent = os.path.dirname(d) + "/"
    dask = argv[1:3] == ["-m", "dask"] and len(argv) > 3 and argv[3] in ("scheduler", "worker")
    driver = argv[1:] == ["-m", "clusterctl.driver", proc["dir"]]
    if dask and parent in roots and os.path.basename(d) not in ("jobs", "tls"):
        return
    if driver and os.path.dirname(parent.rstrip("/")) + "/" in roots and parent.endswith("/jobs/"):
        return
    raise Refused("will not start %r in %s: the agent starts only Dask schedulers and workers, and job"
                  " drivers, each in its own folder of the cluster's" % (" ".join(argv)[:200], proc["dir"]))


def op_start(req):
    """Check the cluster's folders (``roots``: {root: cluster name}) and mark them as the cluster's,
    write the files the processes need (e.g. TLS certificates), then start each process."""
    roots = req.get("roots", {})
    for proc in req["procs"]:
        _allowed(proc, roots)
    _confine([f["path"] for f in req.get("files", [])], roots)
    said = _claim(roots)
    if said:
        return {"started": {proc["name"]: {"error": said} for proc in req["procs"]}}
    failed = {}
    for f in req.get("files", []):
        try:
            _write(f["path"], f["text"], f.get("mode", 0o600))
        except OSError as exc:
            failed[f["path"]] = "cannot write %s: %s" % (f["path"], exc.strerror or exc)
    if failed:
        said = "; ".join(failed.values())
        return {"started": {proc["name"]: {"error": said} for proc in req["procs"]}}
    started = {}
    for proc in req["procs"]:
        for path in proc.get("clear", []):  # e.g. a scheduler file of the scheduler being replaced
            try:
                os.remove(path)
            except OSError:
                pass
        try:
            started[proc["name"]] = {"pid": _spawn(proc).pid}
        except OSError as exc:
            started[proc["name"]] = {"error": "%s: %s" % (exc.strerror or exc, exc.filename or proc["dir"])}
    return {"started": started}


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _wait_gone(ours, seconds):
    deadline = time.time() + seconds
    while ours() and time.time() < deadline:
        time.sleep(0.02)


CHILD_GRACE = 0.5  # seconds a nanny's child gets after SIGTERM (see op_stop)


def _in_cluster(marker, root):
    """Whether a marker is the directory of one of the cluster's own processes: ``<root><name>`` or
    ``<root>jobs/<job id>``, not any folder under the root (another cluster's, nested inside)."""
    if not marker.startswith(root):
        return False
    rest = marker[len(root):].strip("/").split("/")
    return len(rest) == 1 and rest[0] not in ("", "jobs") or (len(rest) == 2 and rest[0] == "jobs" and rest[1] != "")


def op_stop(req):
    """SIGTERM what was started, SIGKILL whatever carries its marker after the grace period, verify.
    ``prefix``: also every process whose marker lies under that folder (the cluster's, on down)."""
    dirs = {proc["dir"] for proc in req.get("procs", [])}
    prefix = req.get("prefix")
    me = os.getpid()

    def ours():
        return {pid: value for pid, value in _markers().items()
                if pid != me and (value in dirs or (prefix and _in_cluster(value, prefix)))}

    targets = ours()
    # SIGTERM to the processes whose parent is not one of ours (the started ones, and any left
    # without their parent); a child is left to its parent: a nanny closes its worker itself.
    tops = [pid for pid in targets if _parent(pid) not in targets]
    _signal(tops, signal.SIGTERM)
    grace = req.get("grace", 10)
    # Children still there after a moment are killed, so that their parent can finish at once
    # (a nanny whose worker was already closing waits seconds for it); the others keep the rest.
    _wait_gone(ours, min(CHILD_GRACE, grace))
    _signal([pid for pid in ours() if pid not in tops], signal.SIGKILL)
    _wait_gone(ours, grace - min(CHILD_GRACE, grace))
    stubborn = ours()
    if stubborn:
        _signal(list(stubborn), signal.SIGKILL)
        _wait_gone(ours, 5)
    left = ours()
    if not left:  # nothing of the cluster runs here any more: its keys need not stay either
        import shutil

        allowed = [r for r in ([prefix] if prefix else [os.path.dirname(d.rstrip("/")) for d in dirs])
                   if _cluster_in(r) is not None]  # a cluster's folder, not one a request made up
        for path in req.get("remove", []):
            if _under(path, allowed):  # only in the cluster's own folder
                shutil.rmtree(path, ignore_errors=True)
        if prefix:  # the client keys of detached jobs whose driver was killed before it removed its own
            try:
                for job in os.listdir(os.path.join(prefix, "jobs")):
                    shutil.rmtree(os.path.join(prefix, "jobs", job, "tls"), ignore_errors=True)
            except OSError:
                pass
    return {
        "stopped": sorted(set(targets.values())),
        "left": [{"pid": pid, "dir": value, "cmd": _cmdline(pid)[:200]} for pid, value in left.items()],
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
    tails = {}
    for path in req["files"]:
        why = _readable(path) if os.path.lexists(path) else ""
        if why:
            tails[path] = "(refused: %s)" % why
        else:
            tails[path] = _tail(path, req.get("lines", 20))
    return {"tails": tails}


def _json_file(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def op_jobs(req):
    """The detached jobs recorded under ``dir`` (the cluster's ``jobs/`` folder on this host): each
    one's spec and status files as the driver left them, whether a process carries its marker, the
    files of its run folder, and the last lines of the driver's own log."""
    folder = req["dir"]
    if os.path.basename(folder.rstrip("/")) != "jobs" or _cluster_of(os.path.join(folder, "x")) is None:
        return {"jobs": []}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {"jobs": []}
    markers = _markers()
    jobs = []
    for name in names:
        d = os.path.join(folder, name)
        spec = _json_file(os.path.join(d, "spec.json"))
        if spec is None:
            continue
        run = os.path.join(d, "run")
        try:
            files = {f: os.path.getsize(os.path.join(run, f)) for f in sorted(os.listdir(run))
                     if os.path.isfile(os.path.join(run, f))}
        except OSError:
            files = {}
        jobs.append({"id": name, "dir": d, "spec": spec, "status": _json_file(os.path.join(d, "status.json")),
                     "pids": sorted(pid for pid, value in markers.items() if value == d),
                     "files": files, "log": _tail(os.path.join(d, "log"), 5)})
    return {"jobs": jobs}


def op_read(req):
    """Up to ``limit`` bytes of a file from ``offset`` (base64), and its size."""
    import base64

    why = _readable(req["path"])
    if why:
        raise Refused(why)
    with open(req["path"], "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(req.get("offset", 0))
        data = f.read(req.get("limit", 1 << 20))
    return {"data": base64.b64encode(data).decode(), "size": size}


def _reach(host, port, timeout):
    """'listening' | 'refused' (the host answers, nothing listens) | 'timeout' | an error text."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "listening"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return exc.strerror or str(exc)


def _memory():
    """(available, total) bytes from /proc/meminfo, or (None, None)."""
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, int(info["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None, None


def op_doctor(req):
    """The probe, plus this host's clock, free memory and disk, and whether it reaches the scheduler."""
    out = op_probe(req)
    out["time"] = time.time()
    out["mem_available"], out["mem_total"] = _memory()
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


OPS = {"probe": op_probe, "alive": op_alive, "write": op_write, "start": op_start, "stop": op_stop,
       "tail": op_tail, "doctor": op_doctor, "jobs": op_jobs, "read": op_read}


def serve(stdin=None, out=None):
    """Answer requests, one JSON line each way, until stdin closes."""
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


if __name__ == "__clusterctl_agent__":
    serve()
