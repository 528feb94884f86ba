"""Each binary's /metrics as Prometheus reads it: `promtool check metrics`
(Debian's prometheus package) has nothing to say about it, and after some
traffic every metric of the scheme (README, "Observability") is there,
with its type and labels."""

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import websockets
from conftest import recv

CLIENTS = Path(__file__).parent / "grpc-web"

# The scheme: per binary, each metric and its type; labels that must have a series.
SHARED = {"chat_dependency_up": "gauge", "chat_otel_spans_dropped_total": "counter"}
LIVE = {
    "chat_room_feeds": "gauge",
    "chat_messages_received_total": "counter",
    "chat_deliveries_total": "counter",
    "chat_broadcast_latency_seconds": "histogram",
    "chat_nats_reconnects_total": "counter",
}
SCHEME = {
    "gateway": {
        **SHARED,
        **LIVE,
        "chat_http_requests_total": "counter",
        "chat_http_request_duration_seconds": "histogram",
        "chat_ws_connections": "gauge",
        "chat_send_latency_seconds": "histogram",
        "chat_ws_closed_by_server_total": "counter",
        "chat_presence_list_reads_total": "counter",
    },
    "core-svc": {
        **SHARED,
        **LIVE,
        "chat_grpc_streams": "gauge",
        "chat_messages_logged_total": "counter",
        "chat_kafka_produce_duration_seconds": "histogram",
        "chat_kafka_produce_errors_total": "counter",
        "chat_nats_publish_errors_total": "counter",
        "chat_events_withdrawn_total": "counter",
        "chat_password_hashes_shed_total": "counter",
        "chat_cache_requests_total": "counter",
        "chat_login_failures_total": "counter",
        "chat_rate_limited_total": "counter",
        "chat_grpc_server_requests_total": "counter",
        "chat_grpc_server_request_duration_seconds": "histogram",
    },
    "archiver": {
        **SHARED,
        "chat_archiver_lag_messages": "gauge",
        "chat_archiver_lag_seconds": "gauge",
        "chat_archiver_batch_size_messages": "histogram",
        "chat_archiver_batch_duration_seconds": "histogram",
        "chat_archiver_store_delay_seconds": "histogram",
        "chat_archiver_records_read_total": "counter",
        "chat_archiver_messages_inserted_total": "counter",
        "chat_archiver_dead_letters_total": "counter",
        "chat_archiver_id_collisions_total": "counter",
        "chat_archiver_messages_withdrawn_total": "counter",
    },
}
SERIES = {
    "gateway": [
        'chat_dependency_up{dependency="core"} 1',
        'chat_dependency_up{dependency="nats"} 1',
        'chat_messages_received_total{transport="ws"} 1',
        'chat_ws_closed_by_server_total{reason="frame_too_large"} 1',
        'chat_http_requests_total{method="GET",route="/room/{roomID}",status="200"} 1',
        'chat_broadcast_latency_seconds_count{transport="ws"}',
    ],
    "core-svc": [
        'chat_dependency_up{dependency="kafka"} 1',
        'chat_dependency_up{dependency="postgres"} 1',
        'chat_dependency_up{dependency="redis"} 1',
        'chat_dependency_up{dependency="nats"} 1',
        'chat_grpc_server_requests_total{service="chat.v1.MessageService",method="Send",code="OK"}',
        'chat_grpc_server_requests_total{service="chat.v1.UserService",method="Login",code="UNAUTHENTICATED"} 1',
        'chat_grpc_server_requests_total{service="chat.v1.MessageService",method="Subscribe",code="CANCELLED"} 1',
        'chat_grpc_server_request_duration_seconds_count{service="chat.v1.UserService",method="Login"}',
        # The message, and presence events as members come and go.
        'chat_deliveries_total{transport="grpc"}',
        'chat_login_failures_total 1',
        'chat_kafka_produce_errors_total{reason="timeout"} 0',
        'chat_cache_requests_total{result="hit"}',
        'chat_broadcast_latency_seconds_count{transport="grpc"} 1',
    ],
    "archiver": [
        'chat_dependency_up{dependency="kafka"} 1',
        'chat_dependency_up{dependency="postgres"} 1',
        'chat_archiver_lag_messages{partition="',
        "chat_archiver_records_read_total",
    ],
}


def endpoints(stack) -> dict:
    return {
        "gateway": f"{stack.base}/metrics",
        "core-svc": f"http://{stack.env['METRICS_LISTEN_ADDR']}/metrics",
        "archiver": f"http://{stack.env['ARCHIVER_LISTEN_ADDR']}/metrics",
    }


def types(text: str) -> dict:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def after_traffic(stack) -> dict:
    """Each binary's /metrics after a bit of everything: REST, a wrong
    login, WebSocket messages to a room with a grpc-web stream on it, a
    socket closed for a frame too large, the archiver storing it all."""
    tokens = []
    for name in ("malice", "mbob"):
        name = f"{name}{uuid.uuid4().hex[:6]}"
        body = {"Username": name, "Email": f"{name}@example.com", "Password": "password"}
        assert requests.post(f"{stack.base}/register", json=body).status_code == 201
        tokens.append(requests.put(f"{stack.base}/login", json=body).json()["token"])
    wrong = requests.put(f"{stack.base}/login", json={**body, "Password": "not the password"})
    assert wrong.status_code == 401
    alice, bob = tokens
    room = requests.post(f"{stack.base}/create-room", headers={"Authorization": alice}, json={"Name": "m"}).json()["RoomID"]
    assert requests.put(f"{stack.base}/join", headers={"Authorization": bob}, json={"RoomID": room}).status_code == 200
    assert requests.get(f"{stack.base}/room/{room}").status_code == 200
    text = f"counted {uuid.uuid4().hex}"
    stream = subprocess.Popen(
        ["node", "subscribe.mjs", f"http://{stack.grpc}", bob, str(room), text], cwd=CLIENTS, stdout=subprocess.PIPE, text=True
    )
    try:
        assert json.loads(stream.stdout.readline()) == {"subscribed": True}

        async def talk():
            async with websockets.connect(f"{stack.ws}?token={alice}") as ws:
                await asyncio.wait_for(ws.recv(), 10)
                await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
                await asyncio.wait_for(ws.recv(), 10)
                await ws.send(json.dumps({"Type": "message", "Text": text}))
                frames = [await recv(ws) for _ in range(2)]
                assert {frame["Type"] for frame in frames} == {"sent", "message"}, frames
            async with websockets.connect(f"{stack.ws}?token={alice}", max_size=None) as ws:
                await ws.send("x" * 20_000)
                await asyncio.wait_for(ws.wait_closed(), 10)
                assert ws.close_code == 1009

        asyncio.run(talk())
        assert json.loads(stream.stdout.readline())["text"] == text
        # The stream ends when its client goes: counted as CANCELLED.
        assert stream.wait(timeout=10) == 0
    finally:
        stream.kill()
    # The archiver's lag comes with the Kafka client's statistics, every 5 s.
    deadline = time.monotonic() + 30
    while True:
        texts = {binary: requests.get(url).text for binary, url in endpoints(stack).items()}
        if all(all(series in texts[binary] for series in SERIES[binary]) for binary in texts):
            return texts
        if time.monotonic() > deadline:
            missing = {b: [s for s in SERIES[b] if s not in texts[b]] for b in texts}
            pytest.fail(f"series missing after 30 s: {missing}")
        time.sleep(0.5)


@pytest.mark.parametrize("binary", SCHEME)
def test_promtool_finds_nothing_to_say(after_traffic, binary):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: scripts/test installs Debian's prometheus package (ensure_promtool)"
    checked = subprocess.run([promtool, "check", "metrics"], input=after_traffic[binary], capture_output=True, text=True)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


@pytest.mark.parametrize("binary", SCHEME)
def test_every_metric_of_the_scheme_is_exported_with_its_type(after_traffic, binary):
    exported = types(after_traffic[binary])
    missing = {name: kind for name, kind in SCHEME[binary].items() if exported.get(name) != kind}
    assert not missing, f"{binary} lacks {missing}; it exports {exported}"
    strangers = sorted(name for name in exported if not name.startswith("chat_"))
    assert not strangers, f"outside the scheme: {strangers}"
