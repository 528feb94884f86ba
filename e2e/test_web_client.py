"""The web client (web/) as the gateway serves it at `/`, driven in
headless Chromium (e2e/grpc-web/web-client.mjs, playwright-core) by people
who register, chat and lose their gateway.

Needs the client built (web/: npm ci, npm run build) and the browser
clients set up (e2e/grpc-web/setup.sh); scripts/test does both. The
screenshots go to $WEB_SCREENSHOTS (default .run/test-output/web/)."""

import json
import os
import pathlib
import shutil
import subprocess
import uuid

import grpc
import pytest
import requests

from conftest import start_stack

ROOT = pathlib.Path(__file__).resolve().parent.parent
WEB_DIST = ROOT / "web" / "dist"
CLIENTS = pathlib.Path(__file__).parent / "grpc-web"
SCREENSHOTS = pathlib.Path(os.environ.get("WEB_SCREENSHOTS", ROOT / ".run" / "test-output" / "web"))


@pytest.fixture(scope="module")
def web_stack():
    assert (WEB_DIST / "index.html").is_file(), "the web client is not built: cd web && npm ci && npm run build"
    # Tokens of a minute, so the client's renewal over the socket happens
    # within the test (it renews at half the lifetime).
    with start_stack(env={"WEB_DIR": str(WEB_DIST), "TOKEN_LIFETIME_SECS": "60"}) as stack:
        yield stack


def scenario(*args: str) -> subprocess.Popen:
    node = shutil.which("node")
    assert node, "node (20 or later) is needed for the browser tests and is not on PATH"
    assert (CLIENTS / "node_modules").is_dir(), "the browser clients are not set up: run e2e/grpc-web/setup.sh"
    return subprocess.Popen(
        [node, "web-client.mjs", *args], cwd=CLIENTS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result_of(proc: subprocess.Popen) -> dict:
    """The scenario's last line; it must have passed."""
    out, err = proc.communicate(timeout=240)
    lines = out.strip().splitlines()
    assert lines, f"the scenario printed nothing (exit {proc.returncode}); stderr:\n{err}"
    result = json.loads(lines[-1])
    assert proc.returncode == 0 and "error" not in result, f"{result}\nstderr:\n{err}"
    return result


def test_the_gateway_serves_the_client_beside_the_api(web_stack):
    page = requests.get(f"{web_stack.base}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.headers
    assert page.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    scripts = [part.split('"')[0] for part in page.text.split('src="/assets/')[1:]]
    styles = [part.split('"')[0] for part in page.text.split('href="/assets/')[1:]]
    assert scripts and styles, page.text
    for name, kind in [(scripts[0], "text/javascript"), (styles[0], "text/css")]:
        asset = requests.get(f"{web_stack.base}/assets/{name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), (name, asset.headers)
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    # The API answers as it did: its routes, and JSON errors for the rest.
    assert requests.get(f"{web_stack.base}/healthz", timeout=10).status_code == 200
    for method, path in [("GET", "/nope"), ("GET", "/assets/missing.js"), ("POST", "/"), ("GET", "/../Cargo.toml")]:
        r = requests.request(method, f"{web_stack.base}{path}", timeout=10)
        assert (r.status_code, r.json()) == (404, {"Error": "no such endpoint"}), (method, path)
    assert requests.get(f"{web_stack.base}/register", timeout=10).status_code == 405


def test_two_people_chat_on_a_laptop_and_a_phone(web_stack):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    result = result_of(scenario("chat", web_stack.base, str(SCREENSHOTS)))
    # What each saw in the lobby, in order, each once: the edit, the
    # deletion and the reply as the other made them.
    expected = ["hello from alice, edited", "This message was deleted.", "a reply to alice"]
    assert result["lobby"] == expected and result["lobbyOnPhone"] == expected, result
    assert result["deletedTextShown"] == 0, result
    assert result["unreadLabel"] == "1 unread" and result["unreadAfterReading"] == 0, result
    assert result["renewed"] and result["authSent"] >= 1, result
    for path in result["screenshots"]:
        assert pathlib.Path(path).stat().st_size > 10_000, path
    assert result["problems"] == [], "\n".join(result["problems"])


def test_a_gateway_restart_loses_nothing_and_repeats_nothing(web_stack, chat):
    pb, rpc = chat
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    proc = scenario("restart", web_stack.base, str(SCREENSHOTS))
    need = json.loads(proc.stdout.readline())
    assert need.get("need") == "stop", need

    # A third person, over gRPC straight to core-svc: the gateway is down.
    channel = grpc.insecure_channel(web_stack.grpc)
    users, rooms, messages = rpc.UserServiceStub(channel), rpc.RoomServiceStub(channel), rpc.MessageServiceStub(channel)
    name = f"erin_{uuid.uuid4().hex[:6]}"
    users.Register(pb.RegisterRequest(username=name, email=f"{name}@example.com", password="password123"))
    token = users.Login(pb.LoginRequest(email=f"{name}@example.com", password="password123")).token
    auth = [("authorization", f"Bearer {token}")]
    rooms.JoinRoom(pb.JoinRoomRequest(room_id=need["room"]), metadata=auth)
    assert web_stack.stop("gateway") == 0
    sent = [f"while the gateway was down {i}" for i in range(5)]
    for text in sent:
        messages.Send(pb.SendRequest(room_id=need["room"], text=text), metadata=auth)
    channel.close()
    proc.stdin.write(json.dumps({"sent": sent}) + "\n")
    proc.stdin.flush()

    need = json.loads(proc.stdout.readline())
    assert need.get("need") == "start", need
    web_stack.start("gateway")
    proc.stdin.write("{}\n")
    proc.stdin.flush()
    result = result_of(proc)
    # Erin's join is an entry of its own, not a message.
    assert result["carol"] == result["expected"], result
    assert result["dave"] == result["expected"], result
