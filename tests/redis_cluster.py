"""A real Redis Cluster on loopback for tests: 3 masters and 3 replicas of ``redis-server``
on free ports, created with ``redis-cli --cluster create``, and the faults the tests
inflict on it (SIGKILL of a master, restart, moving a slot).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from tests.support import free_port, wait_for_port

NODE_TIMEOUT_MS = 1000


def slot_of_namespace(ns: str) -> int:
    return key_slot(f"cb:{{{ns}}}:rev".encode())


@dataclass
class ClusterNode:
    port: int
    bus_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kw)

    def start(self, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             # Set, not port + 10000, which may be taken (or beyond 65535).
             "--cluster-port", str(self.bus_port),
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             # A restarted master without data must not win back its slots.
             "--cluster-replica-validity-factor", "0", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def info(self) -> dict[str, str]:
        c = self.client()
        try:
            text = c.execute_command("CLUSTER INFO")
        finally:
            c.close()
        if isinstance(text, dict):
            return {str(k): str(v) for k, v in text.items()}
        raw = text.decode() if isinstance(text, bytes) else str(text)
        return dict(line.split(":", 1) for line in raw.split() if ":" in line)

    def node_id(self) -> str:
        c = self.client()
        try:
            return str(c.execute_command("CLUSTER MYID").decode())
        finally:
            c.close()


@dataclass
class RedisCluster:
    """3 masters + 3 replicas (``--cluster-replicas 1``) in a temporary directory."""

    size: int = 6
    replicas: int = 1
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="corkboard-rc-")))
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.addr for n in self.nodes[:3])

    def _create(self) -> None:
        if self.size == 1:  # redis-cli creates 3 masters at least: one takes every slot
            c = self.nodes[0].client()
            try:
                c.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
            finally:
                c.close()
            return
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli is not on PATH")
        subprocess.run(
            [cli, "--cluster", "create", *(n.addr for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )

    def start(self) -> RedisCluster:
        ports: list[int] = []
        while len(ports) < 2 * self.size:
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.nodes = [
            ClusterNode(ports[2 * i], ports[2 * i + 1], self.root / str(i))
            for i in range(self.size)
        ]
        for node in self.nodes:
            node.start()
        self._create()
        self.wait_ok()
        return self

    def alive(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok, all slots served, and every
        master's replicas are in sync."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._settled(n) for n in self.alive()):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not settle")
            time.sleep(0.05)

    def _settled(self, node: ClusterNode) -> bool:
        info = node.info()
        if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
            return False
        c = node.client()
        try:
            repl = c.info("replication")
        finally:
            c.close()
        if repl.get("role") == "slave":
            return bool(repl.get("master_link_status") == "up")
        return True

    def masters(self) -> list[ClusterNode]:
        found = []
        for node in self.alive():
            c = node.client()
            try:
                if c.info("replication").get("role") == "master":
                    found.append(node)
            finally:
                c.close()
        return found

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """(start, end, master port) of each slot range, as the first live node says."""
        for node in self.alive():
            c = node.client()
            try:
                return _raw_slots(c)
            except redis.RedisError:
                continue
            finally:
                c.close()
        raise LookupError("no live node answers")

    def owner_port(self, slot: int) -> int | None:
        """The port of the master serving ``slot``, as the first live node says."""
        for start, end, port in self.slot_ranges():
            if start <= slot <= end:
                return port
        return None

    def flush(self) -> None:
        for node in self.masters():
            c = node.client()
            try:
                c.flushall()
            finally:
                c.close()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _raw_slots(client: redis.Redis) -> list[tuple[int, int, int]]:
    """(start, end, master port) of each slot range."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command("CLUSTER", "SLOTS")
        reply = conn.read_response()
    finally:
        client.connection_pool.release(conn)
    return [(int(r[0]), int(r[1]), int(r[2][1])) for r in reply]
