"""The gateway's mesh to core-svc, against the real binaries: three core-svc
replicas and two gateways (each given the list of the three), under a steady
load of REST reads and WebSocket sends, while a replica is killed, restarted,
stopped and resumed, and while more calls arrive than a gateway lets through.
Only processes this module started are signalled."""

import asyncio
import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import websockets

from conftest import PSQL, free_port, new_log_dir, run_env, wait_ready
from test_live import recv, user

# The deadline of every call to core-svc in this module: a call held by a
# stopped replica fails after this, instead of the default 10 s.
DEADLINE_MS = 3000
# Every request of the load gives up after this: one that takes longer hung.
CLIENT_TIMEOUT = 15


class Mesh:
    def __init__(self, directory):
        run_id = uuid.uuid4().hex[:12]
        self.database = f"chat_e2e_{run_id}"
        self.logs = directory
        self.cores = [(free_port(), free_port()) for _ in range(3)]
        self.gateways = [free_port() for _ in range(2)]
        self.env = {
            **run_env(run_id, self.database),
            "CORE_GRPC_ADDR": ",".join(f"http://127.0.0.1:{grpc}" for grpc, _ in self.cores),
            "CORE_PROBE_INTERVAL_MS": "300",
            "CORE_DEADLINE_MS": str(DEADLINE_MS),
        }
        self.processes = {}

    def start(self, name, binary, **env):
        log = open(self.logs / f"{name}.log", "a")
        path = os.path.join(os.environ["BIN_DIR"], binary)
        self.processes[name] = subprocess.Popen([path], env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)

    def start_core(self, i):
        grpc, ops = self.cores[i]
        self.start(f"core-{i}", "core-svc", GRPC_LISTEN_ADDR=f"127.0.0.1:{grpc}", METRICS_LISTEN_ADDR=f"127.0.0.1:{ops}")
        wait_ready(f"http://127.0.0.1:{ops}/readyz", f"core-{i}", self.logs)

    def start_gateway(self, name, port, **env):
        self.start(name, "gateway", HTTP_LISTEN_ADDR=f"127.0.0.1:{port}", **env)
        wait_ready(f"http://127.0.0.1:{port}/readyz", name, self.logs)

    def base(self, i):
        return f"http://127.0.0.1:{self.gateways[i]}"

    def signal(self, name, sig):
        self.processes[name].send_signal(sig)

    def calls(self, i):
        """How many calls replica i has taken (its chat_grpc_calls_admitted_total)."""
        text = requests.get(f"http://127.0.0.1:{self.cores[i][1]}/metrics", timeout=5).text
        found = re.search(r"^chat_grpc_calls_admitted_total (\d+)", text, re.M)
        return int(found.group(1)) if found else 0

    def replicas_in_balancer(self, gateway):
        text = requests.get(f"{self.base(gateway)}/metrics", timeout=5).text
        found = re.search(r"^chat_core_replicas (\d+)", text, re.M)
        return int(found.group(1)) if found else None


def wait_for(condition, what, logs, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s; logs in {logs}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def mesh():
    mesh = Mesh(new_log_dir("chat-e2e-mesh-"))
    subprocess.run([*PSQL, f'CREATE DATABASE "{mesh.database}"'], check=True)
    try:
        for i in range(3):
            mesh.start_core(i)
        mesh.start("archiver", "archiver", ARCHIVER_LISTEN_ADDR=f"127.0.0.1:{free_port()}")
        for i, port in enumerate(mesh.gateways):
            mesh.start_gateway(f"gateway-{i}", port)
        yield mesh
    finally:
        for process in mesh.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in mesh.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        subprocess.run([*PSQL, f'DROP DATABASE IF EXISTS "{mesh.database}" WITH (FORCE)'], check=False)


class Load:
    """Steady load until stopped: reader threads alternating GET /messages
    and GET /rooms over both gateways, and WebSocket senders (one message in
    flight each) over both gateways. Every outcome is recorded with its time."""

    def __init__(self, mesh, token, room, readers=6, senders=4):
        self.mesh, self.token, self.room = mesh, token, room
        self.readers, self.senders = readers, senders
        self.reads = []  # (started, status or exception name, seconds)
        self.sends = []  # (started, "sent" / error text, seconds)
        self.sent_ids = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def read_forever(self, n):
        session = requests.Session()
        headers = {"Authorization": self.token}
        i = 0
        while not self.stopping.is_set():
            path = f"/messages/{self.room}" if i % 2 == 0 else "/rooms"
            started = time.monotonic()
            try:
                status = session.get(f"{self.mesh.base((n + i) % 2)}{path}", headers=headers, timeout=CLIENT_TIMEOUT).status_code
            except requests.RequestException as error:
                status = type(error).__name__
            with self.lock:
                self.reads.append((started, status, time.monotonic() - started))
            i += 1

    async def send_forever(self, n):
        async with websockets.connect(f"{self.mesh.base(n % 2).replace('http', 'ws')}/ws?token={self.token}") as ws:
            await recv(ws)
            await ws.send(json.dumps({"Type": "enter", "RoomID": self.room}))
            assert (await recv(ws))["Type"] == "enter"
            i = 0
            while not self.stopping.is_set():
                ref = f"{n}-{i}"
                started = time.monotonic()
                await ws.send(json.dumps({"Type": "message", "Text": f"load {ref}", "Ref": ref}))
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), CLIENT_TIMEOUT))
                    if frame.get("Ref") == ref and frame["Type"] in ("sent", "error"):
                        break
                outcome = "sent" if frame["Type"] == "sent" else frame["Error"]
                with self.lock:
                    self.sends.append((started, outcome, time.monotonic() - started))
                    if outcome == "sent":
                        self.sent_ids.append(frame["MessageID"])
                i += 1
                await asyncio.sleep(0.02)

    def run(self, during):
        """Runs the load while `during()` runs (in this thread's event loop)."""
        pool = ThreadPoolExecutor(self.readers)
        reading = [pool.submit(self.read_forever, n) for n in range(self.readers)]

        async def main():
            senders = [asyncio.create_task(self.send_forever(n)) for n in range(self.senders)]
            try:
                await asyncio.to_thread(during)
            finally:
                self.stopping.set()
                await asyncio.gather(*senders)

        try:
            asyncio.run(main())
        finally:
            self.stopping.set()
            for future in reading:
                future.result()
            pool.shutdown()

    def failed(self, since=0.0):
        reads = [r for r in self.reads if r[1] != 200 and r[0] >= since]
        sends = [s for s in self.sends if s[1] != "sent" and s[0] >= since]
        return reads, sends


def history_ids(mesh, token, room):
    """Every id of the room's history, page by page (newest first)."""
    ids, last = [], 0
    for _ in range(1000):
        page = requests.get(
            f"{mesh.base(1)}/messages/{room}", params={"LastID": last, "Limit": 100}, headers={"Authorization": token}, timeout=10
        ).json()
        ids += [m["ID"] for m in page if m["ID"] not in ids[-1:]]
        if len(page) < 100:
            return ids
        last = page[-1]["ID"]
    pytest.fail("history without end")


def setup_room(mesh, name):
    token = user_on(mesh, name)
    room = requests.post(f"{mesh.base(0)}/create-room", headers={"Authorization": token}, json={"Name": name}).json()
    return token, room["RoomID"]


def user_on(mesh, name):
    """A user registered and logged in through the first gateway."""
    return user(type("Gateway", (), {"base": mesh.base(0)}), name)


def test_a_killed_replica_fails_only_its_calls_in_flight_and_a_restarted_one_gets_traffic_again(mesh):
    token, room = setup_room(mesh, "meshkill")
    load = Load(mesh, token, room)
    marks = {}

    def during():
        time.sleep(3)
        marks["kill"] = time.monotonic()
        mesh.signal("core-0", signal.SIGKILL)
        mesh.processes["core-0"].wait()
        time.sleep(4)
        marks["restart"] = time.monotonic()
        mesh.start_core(0)
        before = mesh.calls(0)
        wait_for(lambda: mesh.calls(0) > before + 20, "the restarted replica takes calls", mesh.logs)
        marks["back"] = time.monotonic()
        time.sleep(1)

    load.run(during)
    reads, sends = load.failed()
    print(
        f"kill: {len(load.reads)} reads, {len(load.sends)} sends; failed {len(reads)} reads {reads}, "
        f"{len(sends)} sends {sends}; back after {marks['back'] - marks['restart']:.1f} s"
    )
    assert len(load.reads) > 100 and len(load.sends) > 50, "the load ran"
    # Reads are retried on another replica; a send in flight on the killed
    # replica (at most one per socket) fails with a clear error, at the kill.
    assert reads == [], f"failed reads {reads}"
    assert len(sends) <= load.senders, f"more failed sends than were in flight: {sends}"
    for started, outcome, _ in sends:
        assert outcome == "temporarily unavailable", sends
        assert marks["kill"] - 1 <= started <= marks["kill"] + 1, f"a send failed away from the kill: {sends}"
    # Nothing hung: every request ended well before the client's timeout.
    assert max(seconds for _, _, seconds in load.reads + load.sends) < DEADLINE_MS / 1000 + 2
    # Every acknowledged send is in history exactly once.
    ids = history_ids(mesh, token, room)
    assert len(ids) == len(set(ids))
    assert set(load.sent_ids) <= set(ids), "every acknowledged message is stored"


def test_a_stopped_replica_is_avoided_within_seconds_and_gets_traffic_again_once_resumed(mesh):
    token, room = setup_room(mesh, "meshstop")
    load = Load(mesh, token, room, senders=2)
    marks = {}

    def during():
        time.sleep(2)
        marks["stop"] = time.monotonic()
        mesh.signal("core-1", signal.SIGSTOP)
        wait_for(lambda: mesh.replicas_in_balancer(0) == 2 and mesh.replicas_in_balancer(1) == 2, "ejected", mesh.logs)
        marks["ejected"] = time.monotonic()
        time.sleep(3)
        mesh.signal("core-1", signal.SIGCONT)
        marks["resume"] = time.monotonic()
        before = mesh.calls(1)
        wait_for(lambda: mesh.calls(1) > before + 20, "the resumed replica takes calls", mesh.logs)
        marks["back"] = time.monotonic()

    load.run(during)
    after_ejection = load.failed(since=marks["ejected"])
    reads, sends = load.failed()
    print(
        f"stop: ejected after {marks['ejected'] - marks['stop']:.1f} s, back after "
        f"{marks['back'] - marks['resume']:.1f} s; failed {len(reads)} reads, {len(sends)} sends (all before ejection)"
    )
    assert marks["ejected"] - marks["stop"] < 10, "avoided within seconds"
    assert after_ejection == ([], []), f"failures once the replica was avoided: {after_ejection}"
    # Only the calls the stopped replica held fail, at their deadline.
    assert len(reads) <= load.readers and len(sends) <= load.senders, (reads, sends)
    assert max(seconds for _, _, seconds in load.reads + load.sends) < DEADLINE_MS / 1000 + 2


def test_overload_gets_fast_503s_with_retry_after_and_healthz_keeps_answering(mesh):
    port = free_port()
    mesh.start_gateway("gateway-small", port, CORE_MAX_IN_FLIGHT="2")
    base = f"http://127.0.0.1:{port}"
    token, room = setup_room(mesh, "meshover")
    headers = {"Authorization": token}
    answers, health = [], []
    stop = threading.Event()

    def read():
        session = requests.Session()
        while not stop.is_set():
            started = time.monotonic()
            r = session.get(f"{base}/messages/{room}", headers=headers, timeout=CLIENT_TIMEOUT)
            answers.append((r.status_code, r.headers.get("Retry-After"), r.json(), time.monotonic() - started))

    def check_health():
        while not stop.is_set():
            health.append(requests.get(f"{base}/healthz", timeout=CLIENT_TIMEOUT).status_code)
            time.sleep(0.05)

    with ThreadPoolExecutor(33) as pool:
        running = [pool.submit(read) for _ in range(32)] + [pool.submit(check_health)]
        time.sleep(4)
        stop.set()
        for future in running:
            future.result()
    mesh.signal("gateway-small", signal.SIGTERM)
    mesh.processes["gateway-small"].wait(timeout=15)
    shed = [a for a in answers if a[0] == 503]
    print(f"overload: {len(answers)} answers, {len(shed)} shed, healthz {len(health)} times")
    assert shed, "some calls were shed"
    assert {a[0] for a in answers} <= {200, 503}
    for status, retry_after, body, _ in shed:
        assert retry_after == "1" and "temporarily unavailable" in body["Error"], (status, retry_after, body)
    assert health and set(health) == {200}
    assert max(a[3] for a in answers) < DEADLINE_MS / 1000 + 2, "nothing waited past its deadline"
