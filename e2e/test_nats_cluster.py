"""Live messages over a three-node NATS cluster of this module's own
(Debian's nats-server with --cluster and --routes, on free ports), against
the real binaries given the three nodes: one node killed mid-stream, then
the whole cluster killed and started again. NATS is at most once; every
member socket still gets every acknowledged message exactly once and in
id order, the gateway refilling from history what was published while it
was away; and so does a gRPC Subscribe stream of core-svc's. The sends go
through a second gateway that balances them over both replicas: a replica
whose connection is down holds its publications back until it is back,
after newer ones from the other replica (the fault suite, scripts/chaos,
saw those reach sockets out of order, and some never)."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time

import grpc
import pytest
import requests
import websockets

from conftest import free_port, start_stack, wait_ready
from test_live import enter, recv, user

RECEIVERS = 3


class Cluster:
    def __init__(self, directory):
        self.directory = directory
        self.ports = [(free_port(), free_port()) for _ in range(3)]
        self.nodes = [None] * 3

    @property
    def url(self):
        return ",".join(f"nats://127.0.0.1:{client}" for client, _ in self.ports)

    def start(self, i):
        client, route = self.ports[i]
        routes = ",".join(f"nats://127.0.0.1:{r}" for j, (_, r) in enumerate(self.ports) if j != i)
        command = [
            "nats-server", "-a", "127.0.0.1", "-p", str(client), "--cluster_name", "e2e",
            "--cluster", f"nats://127.0.0.1:{route}", "--routes", routes,
        ]
        log = open(self.directory / f"nats-{i}.log", "a")
        self.nodes[i] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", client)) == 0:
                    return
            assert self.nodes[i].poll() is None, f"nats-server {i} exited; log in {self.directory}"
            assert time.monotonic() < deadline, f"nats-server {i} did not start; log in {self.directory}"
            time.sleep(0.05)

    def kill(self, i):
        self.nodes[i].send_signal(signal.SIGKILL)
        self.nodes[i].wait()


class SecondCore:
    def __init__(self, stack):
        grpc_port, ops_port = free_port(), free_port()
        self.grpc = f"127.0.0.1:{grpc_port}"
        env = {**stack.env, "GRPC_LISTEN_ADDR": self.grpc, "METRICS_LISTEN_ADDR": f"127.0.0.1:{ops_port}"}
        log = open(stack.log_dir / "core-svc-2.log", "a")
        binary = os.path.join(os.environ["BIN_DIR"], "core-svc")
        self.process = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(f"http://127.0.0.1:{ops_port}/readyz", "the second core-svc", stack.log_dir)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=15) == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("nats"))
    for i in range(3):
        cluster.start(i)
    try:
        yield cluster
    finally:
        for node in cluster.nodes:
            if node.poll() is None:
                node.kill()
                node.wait()


@pytest.fixture(scope="module")
def stack(cluster):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NATS_URL", cluster.url)
        with start_stack() as stack:
            yield stack


def test_every_acknowledged_message_reaches_every_socket_and_stream_once_through_a_node_kill_and_a_cluster_restart(
    stack, cluster, chat
):
    pb, rpc = chat
    tokens = [user(stack, f"natsuser{i}") for i in range(RECEIVERS + 1)]
    room = requests.post(f"{stack.base}/create-room", headers={"Authorization": tokens[0]}, json={"Name": "nats"}).json()[
        "RoomID"
    ]
    for token in tokens[1:]:
        assert requests.put(f"{stack.base}/join", headers={"Authorization": token}, json={"RoomID": room}).status_code == 200
    acknowledged, received = [], [[] for _ in range(RECEIVERS)]
    # The stream is served by a second replica: its NATS connection, not the
    # sending replica's, is the one that misses what is published meanwhile.
    second = SecondCore(stack)
    sender_port = free_port()
    stack.start(
        "gateway-sender",
        "gateway",
        HTTP_LISTEN_ADDR=f"127.0.0.1:{sender_port}",
        CORE_GRPC_ADDR=f"http://{stack.grpc},http://{second.grpc}",
    )
    wait_ready(f"http://127.0.0.1:{sender_port}/readyz", "the sending gateway", stack.log_dir)
    channel = grpc.insecure_channel(second.grpc)
    stream = rpc.MessageServiceStub(channel).Subscribe(
        pb.SubscribeRequest(room_id=room), metadata=[("authorization", f"Bearer {tokens[1]}")], timeout=120
    )
    stream.initial_metadata()
    streamed = []

    def read_stream():
        try:
            for message in stream:
                if message.kind == pb.MESSAGE_KIND_MESSAGE:
                    streamed.append(message.id)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.CANCELLED, error

    reader = threading.Thread(target=read_stream)
    reader.start()

    async def receive(i, ws, done):
        while not (done.is_set() and set(acknowledged) <= set(received[i])):
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except asyncio.TimeoutError:
                continue
            if frame["Type"] == "message":
                received[i].append(frame["ID"])

    async def send(ws, text):
        await ws.send(json.dumps({"Type": "message", "Text": text, "Ref": text}))
        while True:
            frame = await recv(ws)
            if frame.get("Ref") == text and frame["Type"] in ("sent", "error"):
                if frame["Type"] == "sent":
                    acknowledged.append(frame["MessageID"])
                return

    async def session():
        sender = await websockets.connect(f"ws://127.0.0.1:{sender_port}/ws?token={tokens[0]}")
        sockets = [sender] + [await websockets.connect(f"{stack.ws}?token={token}") for token in tokens[1:]]
        try:
            for ws in sockets:
                await enter(ws, room)
            done = asyncio.Event()
            receivers = [asyncio.create_task(receive(i, ws, done)) for i, ws in enumerate(sockets[1:])]
            for n in range(300):
                if n == 100:
                    cluster.kill(0)
                if n == 200:
                    cluster.kill(1)
                    cluster.kill(2)
                    await asyncio.sleep(1)
                    for i in range(3):
                        cluster.start(i)
                await send(sockets[0], f"n{n}")
                await asyncio.sleep(0.01)
            done.set()
            # Bounded: a socket that misses a message fails below.
            _, late = await asyncio.wait(receivers, timeout=30)
            for task in late:
                task.cancel()
        finally:
            for ws in sockets:
                await ws.close()

    asyncio.run(session())
    deadline = time.monotonic() + 30
    while not set(acknowledged) <= set(streamed) and time.monotonic() < deadline:
        time.sleep(0.1)
    stream.cancel()
    reader.join()
    channel.close()
    # The sending gateway calls the second replica: it stops first.
    assert stack.stop("gateway-sender") == 0
    second.stop()
    assert len(acknowledged) > 250, f"only {len(acknowledged)} of 300 acknowledged"
    for i, ids in enumerate(received):
        missing = set(acknowledged) - set(ids)
        doubled = sorted({m for m in ids if ids.count(m) > 1})
        assert not missing and not doubled, f"socket {i}: {len(missing)} missing, doubled {doubled}"
        assert ids == sorted(ids), f"socket {i}: out of id order at {[b for a, b in zip(ids, ids[1:]) if b < a][:5]}"
    missing = set(acknowledged) - set(streamed)
    doubled = sorted({m for m in streamed if streamed.count(m) > 1})
    assert not missing and not doubled, f"stream: {len(missing)} missing, doubled {doubled}"
