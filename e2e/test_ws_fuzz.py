"""A WebSocket protocol fuzzer against a running gateway, over raw sockets
for what a client library would never send: random and mutated frames,
fragmented messages with control frames between the fragments (and
fragmentation gone wrong), invalid UTF-8 in text frames, oversized upgrade
headers, and slow upgrades. Meanwhile a normal client sends and receives
through it all. Afterwards the gateway still runs and is ready, nothing it
answered was a 5xx, every socket it held is gone (its open-connections
gauge and its open files back to where they were) and its memory is back
near its baseline. Every loop is bounded; everything is on 127.0.0.1."""

import asyncio
import base64
import json
import os
import random
import re
import struct
import time

import requests
import websockets

from conftest import recv

SEED = 12
# How far above their baselines the gateway's RSS and open files may end:
# allocators keep freed memory for reuse, and the gateway's own connections
# (to core-svc, NATS, Redis) may be reopened meanwhile; a leak of a socket
# per fuzzed connection would be thousands.
RSS_TOLERANCE_BYTES = 32 * 1024 * 1024
FILES_TOLERANCE = 2


def user(stack, name):
    body = {"Username": name, "Email": f"{name}@example.com", "Password": "password"}
    assert requests.post(f"{stack.base}/register", json=body).status_code == 201
    return requests.put(f"{stack.base}/login", json={"Email": body["Email"], "Password": "password"}).json()["token"]


def rss_and_files(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as status:
        rss_kib = int(re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.M).group(1))
    return rss_kib * 1024, len(os.listdir(f"/proc/{pid}/fd"))


def open_sockets(stack) -> float:
    metrics = requests.get(f"{stack.base}/metrics", timeout=5).text
    return float(re.search(r"^chat_ws_connections(?:\{[^}]*\})? (\S+)$", metrics, re.M).group(1))


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One client frame as RFC 6455 lays it out, however wrong its fields."""
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def upgrade_request(port: int, token: str, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


class Answers:
    """What the gateway answered the fuzzer: HTTP statuses, and any 5xx."""

    def __init__(self):
        self.statuses = {}
        self.server_errors = []

    def saw(self, status: int, what: str):
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 500:
            self.server_errors.append((status, what))


async def read_head(reader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return int(head.split(b" ", 2)[1])


async def raw_socket(port: int, token: str, frames: list[bytes], answers: Answers, what: str, linger: float = 0.3):
    """Upgrades over a raw TCP socket, writes `frames`, reads whatever comes
    back for `linger` seconds (or until the gateway closes), then hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(port, token))
        await writer.drain()
        status = await read_head(reader)
        answers.saw(status, what)
        if status != 101:
            return
        for data in frames:
            writer.write(data)
        await writer.drain()
        deadline = time.monotonic() + linger
        while (left := deadline - time.monotonic()) > 0:
            try:
                if not await asyncio.wait_for(reader.read(65536), left):
                    break
            except (asyncio.TimeoutError, ConnectionError):
                break
    except ConnectionError:
        pass  # the gateway hung up on something it would not take
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


def random_frames(rng: random.Random) -> list[bytes]:
    """A few frames of random kinds: every opcode (reserved ones too), RSV
    bits, unmasked frames, bad JSON, JSON of the wrong shapes, and bytes
    that are no frame at all."""
    texts = [
        b'{"Type":"enter","RoomID":1}', b'{"Type":"message","Text":"fuzz"}', b'{"Type":"read","MessageID":-1}',
        b'{"Type":"auth","Token":"a.b.c"}', b'{"Type":"typing"}', b'{"Type":7}', b"[]", b"{", b"null",
        json.dumps({"Type": "enter", "RoomID": 2**63}).encode(), b'{"Type":"message","Text":"' + b"x" * 3000 + b'"}',
    ]
    frames = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.35:
            payload = bytearray(rng.choice(texts))
            for _ in range(rng.randint(0, 3)):  # mutations
                if payload:
                    payload[rng.randrange(len(payload))] = rng.randrange(256)
            frames.append(frame(0x1, bytes(payload)))
        elif kind < 0.6:
            frames.append(frame(rng.randrange(16), rng.randbytes(rng.randint(0, 200)), fin=rng.random() < 0.8,
                                rsv=rng.randrange(8) if rng.random() < 0.3 else 0, masked=rng.random() < 0.8))
        elif kind < 0.7:
            frames.append(frame(0x9, rng.randbytes(rng.randint(0, 125))))  # ping
        elif kind < 0.8:
            frames.append(frame(0x2, rng.randbytes(rng.randint(0, 500))))  # binary
        elif kind < 0.9:
            frames.append(rng.randbytes(rng.randint(1, 64)))  # no frame at all
        else:
            # A header that promises more than follows.
            frames.append(frame(0x1, b'{"Type":"typing"}')[:-3])
    return frames


def fragmented_cases() -> dict[str, list[bytes]]:
    enter = b'{"Type":"enter","RoomID":0}'
    return {
        # Valid: fragments with a ping and a pong between them.
        "fragments around control frames": [
            frame(0x1, enter[:8], fin=False), frame(0x9, b"p1"), frame(0x0, enter[8:20], fin=False),
            frame(0xA, b""), frame(0x0, enter[20:], fin=True),
        ],
        "a continuation with nothing to continue": [frame(0x0, enter)],
        "a new message before the last one ended": [frame(0x1, enter[:5], fin=False), frame(0x1, enter)],
        "a fragmented ping": [frame(0x9, b"ab", fin=False), frame(0x0, b"cd")],
        "a ping over 125 bytes": [frame(0x9, b"p" * 200)],
        "a close with a one-byte reason code": [frame(0x8, b"\x03")],
        "a close with an invalid code": [frame(0x8, struct.pack("!H", 999) + b"bad")],
        "fragments adding up past 16 KiB": [frame(0x1, b"x" * 9000, fin=False), frame(0x0, b"y" * 9000)],
        "a frame over 16 KiB": [frame(0x1, b"z" * 20000)],
        "a length of 2^63 - 1": [bytes([0x81, 0x80 | 127]) + struct.pack("!Q", (1 << 63) - 1) + b"\0\0\0\0"],
        # Invalid UTF-8 in text frames, whole and across fragments.
        "invalid UTF-8": [frame(0x1, b'{"Type":"message","Text":"\xff\xfe"}')],
        "an overlong encoding": [frame(0x1, b'{"Text":"\xc0\xaf"}')],
        "a surrogate": [frame(0x1, b'{"Text":"\xed\xa0\x80"}')],
        "a character cut across fragments": [frame(0x1, b'{"Text":"\xe2\x82', fin=False), frame(0x0, b'"}')],
    }


async def oversized_headers(port: int, token: str, answers: Answers):
    """Upgrades with one huge header, and with thousands of small ones: any
    4xx or a hang-up, never a 5xx."""
    for what, extra in [
        ("one 200 KiB header", "X-Fuzz: " + "a" * 200_000 + "\r\n"),
        ("5000 headers", "".join(f"X-Fuzz-{i}: {i}\r\n" for i in range(5000))),
        ("a 100 KiB query", None),
    ]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if extra is None:
                request = upgrade_request(port, token + "&q=" + "b" * 100_000)
            else:
                request = upgrade_request(port, token, extra)
            writer.write(request)
            await writer.drain()
            answers.saw(await read_head(reader), what)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # refused by hanging up
        finally:
            writer.close()


async def slow_upgrades(port: int, token: str, sockets: int, seconds: float):
    """Slowloris: `sockets` upgrades each dribbled out a byte every 0.2 s
    for `seconds`, then abandoned."""

    async def one():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionError:
            return
        try:
            request = upgrade_request(port, token)
            deadline = time.monotonic() + seconds
            for byte in request[:-2]:
                if time.monotonic() > deadline:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass  # the gateway gave up on it first: fine too
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(sockets)))


async def witness(stack, token: str, room: int, stop: asyncio.Event) -> dict:
    """A normal client that sends and receives all along."""
    sent = received = 0
    failures = []
    async with websockets.connect(f"{stack.ws}?token={token}") as ws:
        assert await recv(ws) == {"Type": "enter", "RoomID": 0}
        await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
        assert await recv(ws) == {"Type": "enter", "RoomID": room}
        while not stop.is_set():
            text = f"witness {sent}"
            await ws.send(json.dumps({"Type": "message", "Text": text}))
            sent += 1
            got = set()
            try:
                while got != {"sent", "message"}:
                    answer = await recv(ws)
                    if answer["Type"] == "message" and answer["Text"] != text:
                        continue  # the fuzzer's own messages in the room
                    if answer["Type"] not in ("sent", "message"):
                        failures.append(answer)
                        break
                    got.add(answer["Type"])
                received += "message" in got
            except asyncio.TimeoutError:
                failures.append(f"no answer to {text!r}")
            await asyncio.sleep(0.05)
    return {"sent": sent, "received": received, "failures": failures}


def test_a_gateway_under_protocol_fuzzing_serves_everyone_else_and_ends_where_it_started(stack):
    port = int(stack.base.rsplit(":", 1)[1])
    gateway = stack.processes["gateway"]
    fuzzer, other = user(stack, "wsfuzzer"), user(stack, "wswitness")
    auth = {"Authorization": fuzzer}
    room = requests.post(f"{stack.base}/create-room", headers=auth, json={"Name": "fuzzed"}).json()["RoomID"]
    assert requests.put(f"{stack.base}/join", headers={"Authorization": other}, json={"RoomID": room}).status_code == 200
    rng = random.Random(SEED)
    answers = Answers()

    async def fuzz() -> tuple[dict, tuple[int, int], float]:
        # Warm up (the allocator, the connection paths), then the baseline.
        for n in range(20):
            await raw_socket(port, fuzzer, random_frames(rng), answers, f"warm-up {n}", linger=0.1)
        await asyncio.sleep(1)
        baseline = rss_and_files(gateway.pid)
        sockets_before = open_sockets(stack)
        stop = asyncio.Event()
        watching = asyncio.create_task(witness(stack, other, room, stop))
        await asyncio.sleep(0.5)
        slow = asyncio.create_task(slow_upgrades(port, fuzzer, sockets=40, seconds=6))
        for n in range(150):  # random and mutated frames, 8 sockets at a time
            batch = [raw_socket(port, fuzzer, random_frames(rng), answers, f"random {n}.{i}", 0.15) for i in range(8)]
            await asyncio.gather(*batch)
            if n % 50 == 0:
                await oversized_headers(port, fuzzer, answers)
        for what, frames in fragmented_cases().items():
            await raw_socket(port, fuzzer, frames, answers, what, linger=0.5)
        await slow
        stop.set()
        return await watching, baseline, sockets_before

    seen, (rss_before, files_before), sockets_before = asyncio.run(fuzz())

    assert gateway.poll() is None, "the gateway died"
    assert requests.get(f"{stack.base}/readyz", timeout=5).status_code == 200
    assert answers.server_errors == [], answers.server_errors
    assert answers.statuses.get(101, 0) >= 1200, answers.statuses
    assert seen["failures"] == [] and seen["received"] == seen["sent"] > 20, seen
    # Every socket the fuzzer opened is gone, with its task and its file.
    deadline = time.monotonic() + 20
    while True:
        rss, files = rss_and_files(gateway.pid)
        sockets = open_sockets(stack)
        if (sockets <= sockets_before and files <= files_before) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(f"gateway: RSS {rss_before >> 20} -> {rss >> 20} MiB, open files {files_before} -> {files}, "
          f"sockets {sockets_before} -> {sockets}, answers {answers.statuses}, witness {seen}")
    assert sockets <= sockets_before, f"{sockets} sockets open, {sockets_before} before"
    assert files <= files_before + FILES_TOLERANCE, f"{files} open files, {files_before} before"
    assert rss <= rss_before + RSS_TOLERANCE_BYTES, f"RSS {rss >> 20} MiB, {rss_before >> 20} MiB before"
