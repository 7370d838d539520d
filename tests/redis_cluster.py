"""A local three-primary Redis Cluster on loopback ports, started for a test session.

Three `redis-server --cluster-enabled yes` processes (no persistence: `--save ''`, `--appendonly no`) in a
temporary directory, joined by `redis-cli --cluster create ... --cluster-replicas 0`, ready once every
node's CLUSTER INFO says `cluster_state:ok`. Each node gets two free ports: its client port and its
cluster bus port (`--cluster-port`), so nothing else on the machine can collide with them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from tests.services import free_port, redis_answers, unavailable

PRIMARIES = 3
START_SECONDS = 30


def _cluster_ok(port: int) -> bool:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "cluster", "info"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return "cluster_state:ok" in done.stdout


def _start_node(
    binary: str, workdir: Path, stack: ExitStack, nodes: dict[int, subprocess.Popen[bytes]] | None
) -> int:
    port, bus = free_port(), free_port()
    node_dir = workdir / str(port)
    node_dir.mkdir()
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(bus),
            "--cluster-config-file",
            str(node_dir / "nodes.conf"),
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(node_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    stack.callback(stop)
    if nodes is not None:
        nodes[port] = process
    deadline = time.monotonic() + START_SECONDS
    while not redis_answers("127.0.0.1", port):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"redis-server (cluster node) did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    return port


@contextmanager
def local_cluster(nodes: dict[int, subprocess.Popen[bytes]] | None = None) -> Iterator[list[int]]:
    """Start the cluster; yield its nodes' client ports; stop every node (and remove its files) after.
    `nodes`, when given, gets each node's process by its port (a test that stops and restarts one)."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None:
        unavailable("a local Redis Cluster needs redis-server and redis-cli (make test installs them)")
    with tempfile.TemporaryDirectory(prefix="rp-cluster-") as workdir, ExitStack() as stack:
        ports = [_start_node(binary, Path(workdir), stack, nodes) for _ in range(PRIMARIES)]  # type: ignore[arg-type]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
        wait_cluster_ok(ports)
        yield ports


def wait_cluster_ok(ports: list[int]) -> None:
    """Until every node's CLUSTER INFO says `cluster_state:ok` (a node that is not up yet does not)."""
    deadline = time.monotonic() + START_SECONDS
    while not all(_cluster_ok(port) for port in ports):
        if time.monotonic() > deadline:
            raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")
        time.sleep(0.1)


def cluster_url(ports: list[int]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


def main() -> None:
    """`make cluster`: the same cluster the tests start, in the foreground until Ctrl-C."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # stopped by a supervisor: the nodes still go with it
    with local_cluster() as ports:
        nodes = ",".join(f"127.0.0.1:{port}" for port in ports)
        print(
            f"Redis Cluster of {PRIMARIES} primaries ready (no persistence; stopped and removed on Ctrl-C)."
        )
        print(f"  REDIS_CLUSTER_URLS={nodes} retail-policy serve")
        print(f"  redis-cli -c -p {ports[0]} cluster nodes")
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
