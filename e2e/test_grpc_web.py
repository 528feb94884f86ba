"""core-svc's grpc-web endpoint as browsers and other JavaScript clients use
it: the same flow (e2e/grpc-web/flow.mjs, connect-web) from Node and from
headless Chromium on another origin, plus a hand-made grpc-web-text call and
a CORS preflight that need no JavaScript at all.

Needs e2e/grpc-web/setup.sh to have run (Chromium, npm packages, generated
code, bundle); scripts/test runs it."""

import base64
import functools
import json
import shutil
import struct
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

CLIENTS = Path(__file__).parent / "grpc-web"
CHROMIUM = Path("/usr/bin/chromium")


def run_node(script: str, *args: str, timeout: float = 60) -> dict:
    """Runs one of the grpc-web clients and returns the JSON it printed."""
    node = shutil.which("node")
    assert node, "node (20 or later) is needed for the grpc-web tests and is not on PATH"
    assert (CLIENTS / "node_modules").is_dir() and (CLIENTS / "dist" / "browser-entry.js").is_file(), (
        "the grpc-web clients are not set up: run e2e/grpc-web/setup.sh"
    )
    proc = subprocess.run([node, script, *args], cwd=CLIENTS, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing (exit {proc.returncode}); stderr:\n{proc.stderr}"
    result = json.loads(lines[-1])
    assert proc.returncode == 0 and "error" not in result, f"{script} failed: {result}\nstderr:\n{proc.stderr}"
    return result


def assert_flow(result: dict) -> None:
    """What the flow observed must be one consistent story."""
    uid, received = result["uid"], result["received"]
    assert uid > 0 and uid == result["registered_uid"], result
    assert result["token_received"] is True, result
    # Asked for their own profile, so the e-mail is there too.
    assert result["profile"] == {"uid": uid, "username": result["username"], "email": f"{result['username']}@example.com"}
    assert result["sent_id"] > 0 and received["id"] == result["sent_id"], result
    assert received["text"] == result["sent_text"] and "✓" in received["text"], result
    assert received["uid"] == uid and received["room_id"] == result["room_id"], result


def test_node_client_sends_and_receives_over_grpc_web(stack):
    assert_flow(run_node("node-client.mjs", f"http://{stack.grpc}"))


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_browser_on_another_origin_sends_and_receives_over_grpc_web(stack):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run e2e/grpc-web/setup.sh (installs Debian's chromium)"
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(CLIENTS)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # `localhost` rather than 127.0.0.1: a different origin from core-svc's,
        # so every call is a real cross-origin request with a preflight.
        page = f"http://localhost:{server.server_port}/page.html?core=http://{stack.grpc}"
        assert_flow(run_node("browser.mjs", page, timeout=90))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def grpc_web_text_call(url: str, message: bytes, origin: str) -> tuple[requests.Response, list[tuple[int, bytes]]]:
    """One unary grpc-web-text call: returns the response and its frames."""
    body = base64.b64encode(b"\x00" + struct.pack(">I", len(message)) + message)
    # The Accept header, not the Content-Type, asks for a base64 answer (as
    # text-mode clients such as grpc-web's own do); without it tonic-web
    # answers in binary.
    headers = {
        "content-type": "application/grpc-web-text",
        "accept": "application/grpc-web-text",
        "x-grpc-web": "1",
        "origin": origin,
    }
    r = requests.post(url, data=body, headers=headers, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    # The server may encode each frame separately, padding included, so the
    # text is decoded one 4-character quantum at a time.
    raw = b"".join(base64.b64decode(r.content[i : i + 4]) for i in range(0, len(r.content), 4))
    frames = []
    while raw:
        flag, length = raw[0], struct.unpack(">I", raw[1:5])[0]
        frames.append((flag, raw[5 : 5 + length]))
        raw = raw[5 + length :]
    return r, frames


def status_of(response: requests.Response, frames: list[tuple[int, bytes]]) -> str:
    """grpc-status from the trailer frame (0x80), or from the headers of a
    trailers-only answer."""
    trailers = [payload for flag, payload in frames if flag & 0x80]
    if trailers:
        fields = dict(line.split(":", 1) for line in trailers[-1].decode().strip().split("\r\n"))
        return fields["grpc-status"].strip()
    return response.headers.get("grpc-status", "no grpc-status anywhere")


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def fields(message: bytes) -> dict[int, object]:
    """The varint and length-delimited fields of a protobuf message."""
    out, i = {}, 0
    while i < len(message):
        key, i = read_varint(message, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            out[number], i = read_varint(message, i)
        elif wire_type == 2:
            length, i = read_varint(message, i)
            out[number], i = message[i : i + length], i + length
        else:
            raise AssertionError(f"unexpected wire type {wire_type} in {message!r}")
    return out


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
        if not byte & 0x80:
            return value, i


def test_cors_preflight_and_a_hand_made_grpc_web_text_call(stack):
    origin = "http://localhost:5173"
    preflight = requests.options(
        f"http://{stack.grpc}/chat.v1.UserService/Login",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-grpc-web",
        },
        timeout=10,
    )
    assert 200 <= preflight.status_code < 300, (preflight.status_code, preflight.text)
    assert preflight.headers.get("access-control-allow-origin") == origin, preflight.headers
    allowed = {h.strip().lower() for h in preflight.headers.get("access-control-allow-headers", "").split(",")}
    assert {"authorization", "content-type", "x-grpc-web"} <= allowed, preflight.headers

    name = "webtext_user"
    r = requests.post(
        f"{stack.base}/register",
        json={"Username": name, "Email": f"{name}@example.com", "Password": "password"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    uid = r.json()["UID"]

    url = f"http://{stack.grpc}/chat.v1.UserService/GetProfile"
    # GetProfileRequest{uid}: field 1, varint.
    response, frames = grpc_web_text_call(url, b"\x08" + varint(uid), origin)
    assert response.headers["content-type"].startswith("application/grpc-web-text"), response.headers
    assert response.headers.get("access-control-allow-origin") == origin, response.headers
    assert "grpc-status" in response.headers.get("access-control-expose-headers", "").lower(), response.headers
    assert status_of(response, frames) == "0", frames
    data = [payload for flag, payload in frames if flag == 0]
    assert len(data) == 1, frames
    profile = fields(data[0])
    # Asked anonymously, so without the e-mail (field 3).
    assert profile[1] == uid and profile[2] == name.encode() and 3 not in profile, profile

    response, frames = grpc_web_text_call(url, b"\x08" + varint(999_999_999), origin)
    assert status_of(response, frames) == "5", (response.headers, frames)  # NOT_FOUND
    assert not [payload for flag, payload in frames if flag == 0], frames
