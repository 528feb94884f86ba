"""No log holds a password, a token, an e-mail address or a message text.
scripts/scan-logs is what looks (scripts/test runs it over every log of the
end-to-end run at the end); here it is shown to find each kind of leak, and
a stack is sent canaries through every path that handles them (register,
login right and wrong, a forged token, a message, a malformed frame, an
edit, a search) and its logs scanned."""

import asyncio
import json
import pathlib
import subprocess

import requests
import websockets

from conftest import JWT_SECRET, canary, recv, start_stack

SCANNER = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "scan-logs"


def scan(directory: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCANNER), str(directory)], capture_output=True, text=True, timeout=60)


def test_the_scanner_finds_each_kind_of_leak_and_passes_clean_logs(tmp_path):
    clean = '{"level":"INFO","fields":{"message":"login","uid":7,"outcome":"refused"},"target":"core_svc::users"}\n'
    (tmp_path / "core-svc.log").write_text(clean)
    assert scan(tmp_path).returncode == 0, scan(tmp_path)
    (tmp_path / "canaries.txt").write_text("canary-password-0123abcd\n")
    token = "eyJhbGciOiJIUzI1NiJ9.eyJVSUQiOjd9.c2lnbmF0dXJlLWJ5dGVz"
    leaks = {
        "an e-mail address": "register email=alice.smith@example.co.uk",
        "a JWT": f"authorization: {token}",
        "a bearer token": "header Bearer abcdefghijklmnopqrstuvwxyz012345",
        "the canary": "password=canary-password-0123abcd",
    }
    for what, line in leaks.items():
        leaky = tmp_path / "gateway.log"
        leaky.write_text(clean + line + "\n")
        found = scan(tmp_path)
        assert found.returncode == 1, f"{what}: {found}"
        assert f"gateway.log:2: {what}" in found.stdout, found.stdout
        # The report says where, never the secret itself.
        assert line.split()[-1] not in found.stdout + found.stderr
        leaky.unlink()
    # Nothing to scan is a failure too: the logs went somewhere else.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert scan(empty).returncode == 2


async def send_canaries(ws_url: str, token: str, room: int, text: str) -> int:
    async with websockets.connect(f"{ws_url}?token={token}") as ws:
        assert await recv(ws) == {"Type": "enter", "RoomID": 0}
        await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
        assert await recv(ws) == {"Type": "enter", "RoomID": room}
        await ws.send(json.dumps({"Type": "message", "Text": text}))
        sent = await recv(ws)
        while sent["Type"] != "sent":
            sent = await recv(ws)
        # Malformed: the gateway refuses it, and must not log what it held.
        await ws.send('{"Type": "message", "Text": "' + text)
        while (frame := await recv(ws))["Type"] != "error":
            pass
        assert frame["Error"] == "invalid json"
        await ws.send(json.dumps({"Type": "auth", "Token": f"{text}.{text}.{text}"}))
        while (frame := await recv(ws))["Type"] != "error":
            pass
        assert frame["Error"] == "invalid token"
        return sent["MessageID"]


def test_canaries_sent_through_the_stack_are_in_none_of_its_logs():
    password, text, edited, forged = canary("password"), canary("text"), canary("edit"), canary("token")
    email = f"{canary('email')}@example.com"
    with start_stack() as stack:
        base = stack.base
        assert requests.post(f"{base}/register", json={"Username": "canary", "Email": email, "Password": password}).status_code == 201
        assert requests.put(f"{base}/login", json={"Email": email, "Password": password + "x"}).status_code == 401
        login = requests.put(f"{base}/login", json={"Email": email, "Password": password}).json()
        token = login["token"]
        assert requests.get(f"{base}/profile", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        auth = {"Authorization": token}
        room = requests.post(f"{base}/create-room", headers=auth, json={"Name": text, "IsPrivate": False}).json()["RoomID"]
        message = asyncio.run(send_canaries(stack.ws, token, room, text))
        assert requests.patch(f"{base}/messages/{room}/{message}", headers=auth, json={"Text": edited}).status_code == 200
        assert requests.get(f"{base}/search", headers=auth, params={"q": text}).status_code == 200
        log_dir = stack.log_dir
    (log_dir / "canaries.txt").write_text("\n".join([password, text, edited, forged, email, token, JWT_SECRET]) + "\n")
    found = scan(log_dir)
    assert found.returncode == 0, found.stdout + found.stderr
