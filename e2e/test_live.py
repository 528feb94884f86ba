"""Live messaging against the real binaries, with the websockets library as
the client (what wscat does by hand)."""

import asyncio
import json
import signal
import time

import requests
import websockets
from conftest import recv


def user(stack, name):
    body = {"Username": name, "Email": f"{name}@example.com", "Password": "password"}
    r = requests.post(f"{stack.base}/register", json=body)
    assert r.status_code == 201, r.text
    r = requests.put(f"{stack.base}/login", json={"Email": body["Email"], "Password": "password"})
    return r.json()["token"]


async def enter(ws, room):
    """Reads the lobby frame of a new socket, then enters `room`."""
    await recv(ws)
    await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
    assert await recv(ws) == {"Type": "enter", "RoomID": room}


def test_wscat_session_from_the_readme(stack):
    token = user(stack, "wsuser")
    room = requests.post(f"{stack.base}/create-room", headers={"Authorization": token}, json={"Name": "ws"}).json()["RoomID"]

    async def session():
        async with websockets.connect(f"{stack.ws}?token={token}") as ws:
            assert await recv(ws) == {"Type": "enter", "RoomID": 0}
            await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
            assert await recv(ws) == {"Type": "enter", "RoomID": room}
            await ws.send(json.dumps({"Type": "message", "Text": "my message"}))
            frames = [await recv(ws), await recv(ws)]
            sent = next(f for f in frames if f["Type"] == "sent")
            message = next(f for f in frames if f["Type"] == "message")
            assert message["ID"] == sent["MessageID"] and message["Text"] == "my message"
            return sent["MessageID"]

    message_id = asyncio.run(session())
    history = requests.get(f"{stack.base}/messages/{room}", headers={"Authorization": token}).json()
    assert history[0]["ID"] == message_id


def test_every_sent_message_survives_an_archiver_killed_mid_stream(stack):
    token = user(stack, "crashuser")
    room = requests.post(f"{stack.base}/create-room", headers={"Authorization": token}, json={"Name": "crash"}).json()[
        "RoomID"
    ]
    total = 600

    async def stream():
        acked = []
        async with websockets.connect(f"{stack.ws}?token={token}") as ws:
            await enter(ws, room)
            for i in range(total):
                if i == total // 3:
                    stack.processes["archiver"].send_signal(signal.SIGKILL)
                if i == 2 * total // 3:
                    stack.processes["archiver"].wait()
                    stack.start("archiver")
                await ws.send(json.dumps({"Type": "message", "Text": f"m{i}", "Ref": str(i)}))
                while True:
                    frame = await recv(ws)
                    if frame["Type"] == "sent":
                        acked.append(frame["MessageID"])
                        break
                    assert frame["Type"] == "message", frame
        return acked

    acked = asyncio.run(stream())
    assert len(acked) == total
    deadline = time.monotonic() + 60
    while True:
        stored = stack.psql(f"SELECT id FROM messages WHERE room_id = {room} AND kind = 1").split()
        if len(stored) >= total or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stored = [int(i) for i in stored]
    assert len(stored) == len(set(stored)), "no message stored twice"
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"{len(missing)} of {total} acknowledged messages are not in history: {missing[:5]}..."
    assert len(stored) == total, "nothing else is in history"
