"""A ``kill -9`` leaves servers behind; the next start stops them, or refuses, and says so.

Real processes throughout: ``margin-call up`` as a child, SIGKILLed; the Temporal dev
server and the embedded PostgreSQL it leaves; a second start on the same data
directory; ports taken by someone else. Every test kills what it started, and
whatever serves its (unique) data directory, even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from worker.stack import free_port
from workflows.client import connect

ROOT = Path(__file__).resolve().parents[2]


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _temporal_port() -> int:
    """A port whose + 1000 (the Web UI) is free too."""
    while True:
        port = free_port()
        if port + 1000 < 65536 and _free(port + 1000):
            return port


def _alive(pid: int) -> bool:
    """Not gone and not a zombie (a leftover's parent is init, which reaps when it likes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _servers_on(directory: Path) -> dict[int, str]:
    """Every process whose command line names ``directory``: its Temporal server and its postmaster."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(str(directory) in arg for arg in args) and _alive(int(entry.name)):
            found[int(entry.name)] = args[0]
    return found


def _address(said: str, name: str) -> str:
    """An address from the table ``margin-call up`` prints once it is up."""
    found = re.search(rf"^\s+{name}\s+(\S+)", said, re.MULTILINE)
    assert found is not None, said
    return found.group(1)


def _kinds(servers: dict[int, str]) -> dict[str, int]:
    return {Path(binary).name: pid for pid, binary in servers.items()}


async def _gone(pids: list[int], timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while any(_alive(pid) for pid in pids):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def _kill_servers_on(directory: Path) -> None:
    """Our own cleanup, independent of the code under test: SIGQUIT a postmaster (it tidies up), SIGKILL the rest."""
    servers = _servers_on(directory)
    for pid, binary in servers.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT if Path(binary).name == "postgres" else signal.SIGKILL)
    if not await _gone(list(servers), 10):
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await _gone(list(servers), 5)


class Ups:
    """``margin-call up`` children on one data directory, all stopped at the end, servers included."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.processes: list[asyncio.subprocess.Process] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MARGIN_CALL_")}
        self.env["MARGIN_CALL_DATA_DIR"] = str(data_dir)

    async def spawn(
        self, temporal_port: int | None = None, api_port: int | None = None
    ) -> tuple[asyncio.subprocess.Process, Path, Path]:
        n = len(self.processes)
        out, err = self.data_dir.parent / f"up-{n}.out", self.data_dir.parent / f"up-{n}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:  # files, not pipes: up logs plenty
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "worker.cli",
                "up",
                "--temporal-port",
                str(temporal_port or _temporal_port()),
                "--receiver-port",
                str(free_port()),
                "--api-port",
                str(api_port or free_port()),
                env=self.env,
                cwd=ROOT,
                stdout=stdout,
                stderr=stderr,
            )
        self.processes.append(process)
        return process, out, err

    async def up(self) -> tuple[asyncio.subprocess.Process, str]:
        """A start expected to come up: the process, and what it printed (its addresses)."""
        process, out, err = await self.spawn()
        deadline = asyncio.get_running_loop().time() + 45
        while "margin-call is up" not in out.read_text():
            assert process.returncode is None, (
                f"up exited with {process.returncode}:\n{err.read_text()[-3000:]}"
            )
            assert asyncio.get_running_loop().time() < deadline, err.read_text()[-3000:]
            await asyncio.sleep(0.2)
        return process, out.read_text()

    async def refused(self, temporal_port: int | None = None, api_port: int | None = None) -> tuple[int, str]:
        """A start expected to end on its own, quickly: its exit status and stderr."""
        process, out, err = await self.spawn(temporal_port, api_port)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            pytest.fail(f"still running after 30 s:\n{out.read_text()}")
        assert process.returncode is not None
        return process.returncode, err.read_text()

    async def close(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        await _kill_servers_on(self.data_dir)


@contextlib.asynccontextmanager
async def ups(tmp_path: Path) -> AsyncIterator[Ups]:
    children = Ups(tmp_path / "data")
    try:
        yield children
    finally:
        await children.close()


async def test_a_start_after_kill_9_stops_the_servers_left_running(tmp_path: Path) -> None:
    async with ups(tmp_path) as children:
        first, _ = await children.up()
        left = _kinds(_servers_on(children.data_dir))
        assert set(left) == {"temporal", "postgres"}, left

        first.kill()
        await first.wait()
        await asyncio.sleep(0.5)
        assert all(_alive(pid) for pid in left.values()), "the premise: servers outlive a kill -9 of up"

        second, said = await children.up()
        assert await _gone(list(left.values()), 5), f"leftovers still running: {left}"
        now = _kinds(_servers_on(children.data_dir))
        assert set(now) == {"temporal", "postgres"} and not set(now.values()) & set(left.values()), now
        # With the old ones gone, what answers is the new ones.
        temporal = await connect(_address(said, "Temporal"))
        await temporal.count_workflows()
        ledger = await asyncpg.connect(_address(said, "PostgreSQL"))
        try:
            assert await ledger.fetchval("SELECT count(*) FROM schema_migrations") > 0
        finally:
            await ledger.close()
        err = (children.data_dir.parent / "up-1.err").read_text()
        assert f"pid {left['temporal']}" in err and f"pid {left['postgres']}" in err, (
            "stopping them is logged"
        )

        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0
        assert await _gone(list(now.values()), 10), "a clean stop stops both servers"


async def test_a_second_start_on_a_data_dir_in_use_is_refused_naming_the_lock_and_holder(
    tmp_path: Path,
) -> None:
    async with ups(tmp_path) as children:
        first, _ = await children.up()
        serving = _servers_on(children.data_dir)

        code, err = await children.refused()
        assert code == 2, err
        message = err.strip().splitlines()[-1]
        assert str(children.data_dir) in message and "lock" in message and f"pid {first.pid}" in message
        assert first.returncode is None and _servers_on(children.data_dir) == serving, (
            "the first is untouched"
        )


async def test_a_taken_port_is_an_error_on_the_terminal_naming_it(tmp_path: Path) -> None:
    async with ups(tmp_path) as children:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            port = squatter.getsockname()[1]

            code, err = await children.refused(temporal_port=port)
            message = err.strip().splitlines()[-1]
            assert code == 2 and f"port {port}" in message and "Temporal" in message, err
            assert f"pid {os.getpid()}" in message, "names who holds it"

            code, err = await children.refused(api_port=port)
            message = err.strip().splitlines()[-1]
            assert code == 2 and f"port {port}" in message and "HTTP API" in message, err
        assert _servers_on(children.data_dir) == {}, "nothing was started"


async def test_a_dev_server_that_cannot_bind_says_so_rather_than_in_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when the port is taken between the check and the server's bind."""
    from worker.stack import PortInUse, temporal

    monkeypatch.setattr(temporal, "ensure_ports_free", lambda ports: None)
    with socket.socket() as squatter:  # bound, not listening: a client is refused, the server cannot bind
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        server = temporal.TemporalDevServer(tmp_path / "temporal" / "temporal.sqlite", port=port, ui=False)
        try:
            with pytest.raises(PortInUse, match=f"port {port}"):
                await server.start(timeout=30)
        finally:
            await server.stop()
            await _kill_servers_on(tmp_path)
    assert server.process is not None and server.process.returncode is not None


async def test_another_server_answering_on_the_port_is_not_taken_for_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.stack import PortInUse, temporal

    port = free_port()
    theirs = temporal.TemporalDevServer(tmp_path / "a" / "temporal" / "temporal.sqlite", port=port, ui=False)
    ours = temporal.TemporalDevServer(tmp_path / "b" / "temporal" / "temporal.sqlite", port=port, ui=False)
    try:
        await theirs.start(timeout=30)
        monkeypatch.setattr(temporal, "ensure_ports_free", lambda ports: None)
        with pytest.raises(PortInUse, match=f"port {port}"):
            await ours.start(timeout=30)
        assert ours.process is not None and ours.process.returncode is not None
    finally:
        await ours.stop()
        await theirs.stop()
        await _kill_servers_on(tmp_path)


async def test_recorded_pids_now_held_by_other_processes_are_left_alone(tmp_path: Path) -> None:
    from worker.stack import LeftoverError, stop_leftovers

    database = tmp_path / "temporal" / "temporal.sqlite"
    database.parent.mkdir(parents=True)
    (tmp_path / "postgres").mkdir()
    unrelated = await asyncio.create_subprocess_exec("sleep", "60")
    # Serves our database, but is not the temporal binary: not ours to stop.
    foreign = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)", "--db-filename", str(database)
    )
    try:
        (database.parent / "temporal.pid").write_text(f"{unrelated.pid}\n")
        (tmp_path / "postgres" / "postmaster.pid").write_text(f"{unrelated.pid}\n{tmp_path / 'postgres'}\n")
        await asyncio.to_thread(stop_leftovers, tmp_path)
        assert unrelated.returncode is None and _alive(unrelated.pid)
        assert not (database.parent / "temporal.pid").exists()
        assert not (tmp_path / "postgres" / "postmaster.pid").exists(), "stale: PostgreSQL would refuse it"

        (database.parent / "temporal.pid").write_text(f"{foreign.pid}\n")
        with pytest.raises(LeftoverError, match=f"pid {foreign.pid}"):
            await asyncio.to_thread(stop_leftovers, tmp_path)
        assert foreign.returncode is None and _alive(foreign.pid)
    finally:
        for process in (unrelated, foreign):
            if process.returncode is None:
                process.kill()
                await process.wait()


BENCH_LIKE = """
import asyncio, sys
from worker.stack import EmbeddedPostgres, TemporalDevServer, scratch_data_dir

async def main() -> None:
    async with scratch_data_dir(sys.argv[1]) as directory:
        await EmbeddedPostgres(directory / "postgres").start()
        await TemporalDevServer(directory / "temporal" / "temporal.sqlite", port=int(sys.argv[2]), ui=False).start()
        print(directory, flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_a_bench_or_soak_run_clears_what_a_killed_run_left(tmp_path: Path) -> None:
    from worker.stack import scratch_data_dir

    prefix = f"margin-call-test-leftovers-{uuid.uuid4().hex[:8]}-"
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BENCH_LIKE, prefix, str(free_port()), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    old: Path | None = None
    try:
        assert run.stdout is not None
        old = Path((await asyncio.wait_for(run.stdout.readline(), 45)).decode().strip())
        left = _kinds(_servers_on(old))
        assert set(left) == {"temporal", "postgres"}, left
        run.kill()
        await run.wait()

        async with scratch_data_dir(prefix) as new:
            assert new != old and not old.exists()
            assert await _gone(list(left.values()), 5), f"leftovers still running: {left}"
        assert not new.exists()
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()
        if old is not None:
            await _kill_servers_on(old)
            await asyncio.to_thread(shutil.rmtree, old, True)


HOLDER = """
import sys, time
from pathlib import Path
from worker.stack import DataDirLock
DataDirLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


async def test_a_fresh_data_dir_is_emptied_only_once_it_is_ours(tmp_path: Path) -> None:
    """What the demo needs: it starts from nothing, but must not wipe a live run's directory."""
    from worker.stack import DataDirInUse, fresh_data_dir

    (tmp_path / "temporal").mkdir()
    (tmp_path / "notices.jsonl").write_text("{}\n")
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(tmp_path), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"held\n"
        with pytest.raises(DataDirInUse, match=f"pid {holder.pid}"):
            async with fresh_data_dir(tmp_path):
                pass
        assert (tmp_path / "notices.jsonl").exists(), "a live run's data is left alone"
    finally:
        holder.kill()
        await holder.wait()
    async with fresh_data_dir(tmp_path) as directory:
        assert [entry.name for entry in directory.iterdir()] == ["margin-call.lock"]
