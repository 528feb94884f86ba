"""Traces as a tracing backend receives them: the binaries export over OTLP
to a real Jaeger v2 (the `jaeger` fixture), and the tests read the traces
back from its query API. One message sent over a WebSocket is one trace
across both gateways, core-svc, Kafka and NATS (and the archiver's batch
links to it); a REST call continues the client's own trace down to
PostgreSQL and Redis; sampling at 0 exports nothing; a collector that is
down changes no answer; and no attribute anywhere holds a token, a
password, an e-mail address or a message's text."""

import asyncio
import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import websockets

from conftest import free_port, recv, start_stack, wait_ready

CLIENTS = Path(__file__).parent / "grpc-web"
# What the tests sent that must never be in a span: tokens, passwords,
# e-mail addresses, message texts.
SECRETS: list[str] = []


def exporting_to(jaeger, protocol: str = "grpc") -> dict:
    """Settings that export to `jaeger` over `protocol`, every 100 ms."""
    endpoint = jaeger.otlp_grpc if protocol == "grpc" else jaeger.otlp_http
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def user(base: str) -> str:
    """A new user, registered and logged in over REST: their token."""
    name = f"t{uuid.uuid4().hex[:10]}"
    email, password = f"{name}@example.com", f"pw-{uuid.uuid4().hex}"
    r = requests.post(f"{base}/register", json={"Username": name, "Email": email, "Password": password})
    assert r.status_code == 201, r.text
    login = requests.put(f"{base}/login", json={"Email": email, "Password": password}).json()
    SECRETS.extend([email, password, login["token"]])
    return login["token"]


async def enter(ws, room: int) -> None:
    assert await recv(ws) == {"Type": "enter", "RoomID": 0}
    await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
    assert await recv(ws) == {"Type": "enter", "RoomID": room}


class Trace:
    """A trace as Jaeger's query API answers it."""

    def __init__(self, data: dict):
        self.id = data["traceID"]
        self.spans = data["spans"]
        self.processes = data["processes"]

    def service(self, span: dict) -> str:
        return self.processes[span["processID"]]["serviceName"]

    def find(self, service: str, name: str) -> list[dict]:
        return [s for s in self.spans if self.service(s) == service and s["operationName"] == name]

    def one(self, service: str, name: str) -> dict:
        found = self.find(service, name)
        assert len(found) == 1, f"{len(found)} spans {name!r} of {service} in {self.summary()}"
        return found[0]

    def summary(self) -> list[str]:
        return sorted(f"{self.service(s)}: {s['operationName']}" for s in self.spans)


def tags(span: dict) -> dict:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def parent(span: dict) -> str | None:
    return next((ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"), None)


def end(span: dict) -> int:
    return span["startTime"] + span["duration"]


def eventually(what: str, find, seconds: float = 30):
    """Asks `find` until it returns something truthy."""
    deadline = time.monotonic() + seconds
    while True:
        found = find()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.5)


def test_a_message_is_one_trace_from_the_senders_socket_to_every_listener(jaeger):
    env_for = {"archiver": exporting_to(jaeger, "http/protobuf")}
    with start_stack(exporting_to(jaeger), env_for) as stack:
        topic, prefix = stack.env["KAFKA_TOPIC"], stack.env["NATS_SUBJECT_PREFIX"]
        alice, bob, carol = user(stack.base), user(stack.base), user(stack.base)
        room = requests.post(f"{stack.base}/create-room", headers={"Authorization": alice}, json={"Name": "traced"}).json()["RoomID"]
        for token in (bob, carol):
            assert requests.put(f"{stack.base}/join", headers={"Authorization": token}, json={"RoomID": room}).status_code == 200
        # A second gateway, named by OTEL_SERVICE_NAME, exporting over
        # HTTP/protobuf and only when it stops: its spans reach Jaeger by
        # the flush at shutdown.
        port_b = free_port()
        stack.start(
            "gateway-b",
            "gateway",
            HTTP_LISTEN_ADDR=f"127.0.0.1:{port_b}",
            OTEL_SERVICE_NAME="gateway-b",
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=e2e",
            **{**exporting_to(jaeger, "http/protobuf"), "OTEL_BSP_SCHEDULE_DELAY": "600000"},
        )
        wait_ready(f"http://127.0.0.1:{port_b}/readyz", "the second gateway", stack.log_dir)
        text = f"traced text {uuid.uuid4().hex}"
        SECRETS.append(text)
        subscriber = subprocess.Popen(
            ["node", "subscribe.mjs", f"http://{stack.grpc}", carol, str(room), text],
            cwd=CLIENTS,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert json.loads(subscriber.stdout.readline()) == {"subscribed": True}

            async def exchange():
                async with websockets.connect(f"ws://127.0.0.1:{port_b}/ws?token={bob}") as on_b:
                    await enter(on_b, room)
                    async with websockets.connect(f"{stack.ws}?token={alice}") as on_a:
                        await enter(on_a, room)
                        await on_a.send(json.dumps({"Type": "message", "Text": text, "Ref": "r1"}))
                        frames = [await recv(on_a), await recv(on_a)]
                        sent = next(f for f in frames if f["Type"] == "sent")
                    assert (await recv(on_b))["Text"] == text
                    return sent["MessageID"]

            message_id = asyncio.run(exchange())
            received = json.loads(subscriber.stdout.readline())
            assert received["id"] == message_id and received["text"] == text, received
            assert subscriber.wait(timeout=10) == 0
        finally:
            subscriber.kill()
        assert stack.stop("gateway-b") == 0

        template = f"{prefix}.room.{{id}}"
        receive = f"receive {template}"

        def complete() -> Trace | None:
            for data in jaeger.traces("gateway", operation="message"):
                trace = Trace(data)
                spans = trace.find("gateway", "message")
                if not any(tags(s).get("chat.room.id") == room for s in spans):
                    continue
                listeners = [trace.find(service, receive) for service in ("gateway", "gateway-b", "core-svc")]
                return trace if all(listeners) else None
            return None

        trace = Trace(jaeger.trace(eventually("the trace with every listener's span", complete).id))

        # gateway A: the frame, then the call to core-svc.
        frame = trace.one("gateway", "message")
        assert parent(frame) is None, "a WebSocket message starts a trace of its own"
        assert tags(frame)["span.kind"] == "server"
        call = trace.one("gateway", "chat.v1.MessageService/Send")
        assert parent(call) == frame["spanID"]
        rpc = {"span.kind": "client", "rpc.system": "grpc", "rpc.service": "chat.v1.MessageService", "rpc.method": "Send"}
        assert rpc.items() <= tags(call).items() and tags(call)["rpc.grpc.status_code"] == 0, tags(call)
        # core-svc: the call served, the log's acknowledgement, then the live publication.
        served = trace.one("core-svc", "chat.v1.MessageService/Send")
        assert parent(served) == call["spanID"]
        assert {**rpc, "span.kind": "server"}.items() <= tags(served).items(), tags(served)
        send = trace.one("core-svc", f"send {topic}")
        assert parent(send) == served["spanID"]
        produced = tags(send)
        assert {
            "span.kind": "producer",
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        }.items() <= produced.items(), produced
        assert produced["messaging.kafka.offset"] >= 0 and produced["messaging.destination.partition.id"].isdigit()
        publish = trace.one("core-svc", f"publish {template}")
        assert parent(publish) == served["spanID"]
        assert {
            "span.kind": "producer",
            "messaging.system": "nats",
            "messaging.destination.name": f"{prefix}.room.{room}",
            "messaging.destination.template": template,
        }.items() <= tags(publish).items(), tags(publish)
        assert publish["startTime"] >= end(send), "published live only once the log has it"
        cache = [s for s in trace.spans if parent(s) == served["spanID"] and tags(s).get("db.system.name") == "redis"]
        assert cache and all(tags(s)["span.kind"] == "client" for s in cache), trace.summary()
        # Every process with a listener: one span for the event, counting its listeners.
        for service in ("gateway", "gateway-b", "core-svc"):
            fanout = trace.one(service, receive)
            assert parent(fanout) == publish["spanID"], service
            got = tags(fanout)
            assert got["span.kind"] == "consumer" and got["messaging.system"] == "nats", got
            assert got["chat.fanout.listeners"] == 1, (service, got)
        named_b = trace.processes[trace.one("gateway-b", receive)["processID"]]
        assert {"key": "deployment.environment.name", "type": "string", "value": "e2e"} in named_b["tags"], named_b

        # The archiver's batch: a trace of its own, linked to the send.
        def batch() -> dict | None:
            for data in jaeger.traces("archiver", operation=f"process {topic}"):
                for span in Trace(data).find("archiver", f"process {topic}"):
                    if any(ref["spanID"] == send["spanID"] and ref["traceID"] == trace.id for ref in span["references"]):
                        return data
            return None

        archived = Trace(eventually("the archiver's batch linked to the send", batch))
        process = archived.one("archiver", f"process {topic}")
        assert parent(process) is None
        consumed = tags(process)
        assert {
            "span.kind": "consumer",
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
        }.items() <= consumed.items(), consumed
        assert consumed["messaging.batch.message_count"] >= 1
        assert parent(archived.one("archiver", "INSERT messages")) == process["spanID"]


def test_a_rest_call_continues_the_clients_trace_down_to_postgresql_and_redis(jaeger):
    with start_stack(exporting_to(jaeger)) as stack:
        token = user(stack.base)
        room = requests.post(f"{stack.base}/create-room", headers={"Authorization": token}, json={"Name": "rest"}).json()["RoomID"]
        trace_id, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        r = requests.get(f"{stack.base}/room/{room}", headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
        assert r.status_code == 200 and r.json()["RoomID"] == room, r.text

        def complete() -> Trace | None:
            data = jaeger.trace(trace_id)
            trace = data and Trace(data)
            return trace if trace and trace.find("core-svc", "SELECT rooms") else None

        trace = eventually("the REST call's trace", complete)
        http = trace.one("gateway", "GET /room/{roomID}")
        assert http["traceID"] == trace_id and parent(http) == client_span, "the client's traceparent is continued"
        assert {
            "span.kind": "server",
            "http.request.method": "GET",
            "http.route": "/room/{roomID}",
            "http.response.status_code": 200,
            "url.path": f"/room/{room}",
        }.items() <= tags(http).items(), tags(http)
        call = trace.one("gateway", "chat.v1.RoomService/GetRoom")
        assert parent(call) == http["spanID"]
        served = trace.one("core-svc", "chat.v1.RoomService/GetRoom")
        assert parent(served) == call["spanID"]
        select = trace.one("core-svc", "SELECT rooms")
        assert parent(select) == served["spanID"]
        assert {
            "span.kind": "client",
            "db.system.name": "postgresql",
            "db.operation.name": "SELECT",
            "db.collection.name": "rooms",
            "db.query.summary": "SELECT rooms",
        }.items() <= tags(select).items(), tags(select)
        # The cache was asked first, and filled after.
        get, put = trace.one("core-svc", "GET"), trace.one("core-svc", "SET")
        for span in (get, put):
            assert parent(span) == served["spanID"]
            assert {"span.kind": "client", "db.system.name": "redis"}.items() <= tags(span).items(), tags(span)
        assert end(get) <= select["startTime"] and end(select) <= put["startTime"]
        statements = [t for s in trace.spans for t in tags(s) if t in ("db.statement", "db.query.text")]
        assert not statements, "no statement's text"

        # A log line written in a traced call names its trace: the login's.
        email, password = f"l{uuid.uuid4().hex[:10]}@example.com", f"pw-{uuid.uuid4().hex}"
        SECRETS.extend([email, password])
        requests.post(f"{stack.base}/register", json={"Username": email[:11], "Email": email, "Password": password})
        login_trace = uuid.uuid4().hex
        traced = {"traceparent": f"00-{login_trace}-{uuid.uuid4().hex[:16]}-01"}
        login = requests.put(f"{stack.base}/login", json={"Email": email, "Password": password}, headers=traced)
        assert login.status_code == 200
        SECRETS.append(login.json()["token"])

        def logged() -> dict | None:
            for line in (stack.log_dir / "core-svc.log").read_text().splitlines():
                entry = json.loads(line) if line.startswith("{") else {}
                if entry.get("message") == "login" and entry.get("trace_id") == login_trace:
                    return entry
            return None

        entry = eventually("core-svc's log line of the login, with its trace id", logged, 10)
        assert re.fullmatch("[0-9a-f]{16}", entry["span_id"]), entry
        def login_spans() -> set[str]:
            data = jaeger.trace(login_trace)
            return data and {s["spanID"] for s in Trace(data).find("core-svc", "chat.v1.UserService/Login")}

        assert entry["span_id"] in eventually("core-svc's span of the login", login_spans)


def test_sampling_at_a_ratio_of_zero_exports_nothing(jaeger):
    names = {binary: f"unsampled-{binary}-{uuid.uuid4().hex[:6]}" for binary in ("gateway", "core-svc", "archiver")}
    env = {**exporting_to(jaeger), "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    env_for = {binary: {"OTEL_SERVICE_NAME": name} for binary, name in names.items()}
    with start_stack(env, env_for) as stack:
        token = user(stack.base)
        room = requests.post(f"{stack.base}/create-room", headers={"Authorization": token}, json={"Name": "dark"}).json()["RoomID"]
        text = f"unsampled text {uuid.uuid4().hex}"
        SECRETS.append(text)

        async def message():
            async with websockets.connect(f"{stack.ws}?token={token}") as ws:
                await enter(ws, room)
                await ws.send(json.dumps({"Type": "message", "Text": text}))
                return [await recv(ws), await recv(ws)]

        assert {frame["Type"] for frame in asyncio.run(message())} == {"sent", "message"}
        assert requests.get(f"{stack.base}/messages/{room}", headers={"Authorization": token}).json()[0]["Text"] == text
    # Stopped: whatever they had to export has been flushed.
    time.sleep(1)
    assert not set(names.values()) & set(jaeger.services()), jaeger.services()


class Silent:
    """A collector that accepts connections and never answers."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                self.held.append(self.server.accept()[0])
            except OSError:
                return

    def close(self):
        self.server.close()
        for connection in self.held:
            connection.close()


@pytest.mark.parametrize("collector", ["closed port", "silent"])
def test_a_collector_that_is_down_changes_no_answer(collector):
    silent = Silent() if collector == "silent" else None
    port = silent.port if silent else free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # Each export waits a minute for the silent one, so that its queue fills.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TIMEOUT": "60000"}
    env_for = {"gateway": {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}}
    try:
        with start_stack(env, env_for) as stack:
            token = user(stack.base)
            auth = {"Authorization": token}
            room = requests.post(f"{stack.base}/create-room", headers=auth, json={"Name": "down"}).json()["RoomID"]
            text = f"text while the collector is down {uuid.uuid4().hex}"

            async def message():
                async with websockets.connect(f"{stack.ws}?token={token}") as ws:
                    await enter(ws, room)
                    await ws.send(json.dumps({"Type": "message", "Text": text, "Ref": "d"}))
                    return sorted([await recv(ws), await recv(ws)], key=lambda frame: frame["Type"])

            message, sent = asyncio.run(message())
            assert (sent["Type"], sent["Ref"], message["Text"]) == ("sent", "d", text)
            assert requests.get(f"{stack.base}/messages/{room}", headers=auth).json()[0]["ID"] == sent["MessageID"]
            # More spans than the export queue holds while the collector
            # does not answer: they are dropped and counted, and every
            # request is answered all the same.
            urls = [f"{stack.base}/room/{room}"] * 1500
            with requests.Session() as session:
                answers = list(map(lambda url: session.get(url).status_code, urls))
            assert set(answers) == {200}
            metrics = requests.get(f"{stack.base}/metrics").text
            dropped = re.search(r"^chat_otel_spans_dropped_total (\d+)", metrics, re.M)
            assert dropped, metrics
            if silent:
                assert int(dropped.group(1)) > 0, "the queue is bounded, and what it drops is counted"
        # The stack stopped within the conftest's 15 s, exit code 0: the
        # flush at shutdown gave up in time.
    finally:
        if silent:
            silent.close()


@pytest.mark.parametrize("binary", ["gateway", "core-svc", "archiver"])
def test_a_bad_export_setting_stops_the_start_naming_it(binary):
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.5",
    }
    started = subprocess.run([os.path.join(os.environ["BIN_DIR"], binary)], env=env, capture_output=True, text=True, timeout=30)
    assert started.returncode != 0
    said = started.stdout + started.stderr
    assert "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// URL" in said and "OTEL_TRACES_SAMPLER_ARG must be a ratio" in said, said


def test_no_attribute_holds_a_token_a_password_an_email_or_a_message(jaeger):
    assert len(SECRETS) >= 10, "the tests above ran first, in this module's Jaeger"
    values = []
    for service in jaeger.services():
        for data in jaeger.traces(service):
            values += [data["traceID"]]
            for span in data["spans"]:
                values += [span["operationName"], *(str(tag["value"]) for tag in span["tags"])]
                values += [str(field["value"]) for log in span.get("logs", []) for field in log["fields"]]
            values += [str(tag["value"]) for process in data["processes"].values() for tag in process["tags"]]
    assert len(values) > 200, f"only {len(values)} values: the traces are missing"
    leaks = {secret for secret in SECRETS for value in values if secret in value}
    assert not leaks, f"found in exported spans: {leaks}"
