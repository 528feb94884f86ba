"""The message log's broker and the archiver both killed with SIGKILL and
started again, against the real binaries and a Kafka broker of this
module's own (scripts/kafka-node on free ports)."""

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest
import requests
import websockets

from conftest import free_port, start_stack
from test_live import enter, recv, user

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Broker:
    def __init__(self, directory):
        self.directory = directory
        self.ports = (free_port(), free_port())
        self.address = f"127.0.0.1:{self.ports[0]}"
        self.process = None

    def start(self):
        log_path = self.directory / "broker.log"
        log = open(log_path, "w")
        command = [str(ROOT / "scripts" / "kafka-node"), *map(str, self.ports), str(self.directory)]
        self.process = subprocess.Popen(
            command, env={**os.environ, "KAFKA_HEAP": "256m"}, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while "Kafka Server started" not in log_path.read_text():
            assert self.process.poll() is None, f"the broker exited: {log_path.read_text()}"
            assert time.monotonic() < deadline, f"the broker did not start; its log is {log_path}"
            time.sleep(0.1)

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        if broker.process.poll() is None:
            broker.kill()


@pytest.fixture(scope="module")
def stack(broker):
    # The stack fixture of conftest.py, pointed at this module's broker.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAFKA_BROKERS", broker.address)
        with start_stack() as stack:
            yield stack


def test_the_broker_and_the_archiver_killed_together_and_restarted_lose_and_double_nothing(stack, broker):
    token = user(stack, "outageuser")
    headers = {"Authorization": token}
    room = requests.post(f"{stack.base}/create-room", headers=headers, json={"Name": "outage"}).json()["RoomID"]

    async def send(ws, text):
        """The `sent` or `error` frame that answers one message."""
        await ws.send(json.dumps({"Type": "message", "Text": text, "Ref": text}))
        while True:
            frame = await recv(ws)
            if frame["Type"] in ("sent", "error") and frame.get("Ref") == text:
                return frame

    async def session():
        acked = []
        async with websockets.connect(f"{stack.ws}?token={token}") as ws:
            await enter(ws, room)
            for i in range(100):
                frame = await send(ws, f"before {i}")
                assert frame["Type"] == "sent", frame
                acked.append(frame["Ref"])

            broker.kill()
            stack.processes["archiver"].send_signal(signal.SIGKILL)
            stack.processes["archiver"].wait()
            started = time.monotonic()
            frame = await send(ws, "while down")
            assert frame == {"Type": "error", "Error": "temporarily unavailable", "Ref": "while down"}
            assert time.monotonic() - started < 15, "refused within the produce timeout, not hung"

            broker.start()
            stack.start("archiver")
            after = 0
            for attempt in range(600):
                frame = await send(ws, f"after {attempt}")
                if frame["Type"] == "sent":
                    acked.append(frame["Ref"])
                    after += 1
                    if after == 100:
                        break
                else:
                    assert after == 0 and frame["Error"] == "temporarily unavailable", frame
                    await asyncio.sleep(0.2)
            assert after == 100, "sends succeed again without restarting core-svc"
        return acked

    acked = asyncio.run(session())
    deadline = time.monotonic() + 90
    while True:
        rows = stack.psql(f"SELECT text FROM messages WHERE room_id = {room} AND kind = 1").splitlines()
        if set(acked) <= set(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = sorted(set(acked) - set(rows))
    assert not missing, f"{len(missing)} acknowledged messages are not in history: {missing[:5]}"
    doubled = sorted({text for text in rows if rows.count(text) > 1})
    assert not doubled, f"stored more than once: {doubled[:5]}"
