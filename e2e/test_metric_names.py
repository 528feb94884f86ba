"""Every metric that the alert rules (helm/chat/files/alerts.yaml) and the
Grafana dashboards (helm/chat/files/dashboards/) query is one that the
binaries really export: a misspelt or renamed metric would leave a panel
empty and an alert silent for ever, which no PromQL check can see.

The binaries run, get some traffic of every kind (REST, a WebSocket
message, gRPC calls and a Subscribe stream, refused logins), and their
three /metrics are scraped. A name counts as exported when a binary lists
it (a histogram's _bucket, _sum and _count series with it); so a metric
that only appears once its first event happens (a produce error, a slow
client cut off) must be registered by its binary at start, at zero, for
its alert to be able to fire in the first place."""

import asyncio
import json
import pathlib
import re
import time
import uuid

import grpc
import pytest
import requests
import websockets
import yaml
from conftest import recv

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "helm/chat/files/alerts.yaml"
DASHBOARDS = ROOT / "helm/chat/files/dashboards"

# PromQL string literals (label values, regexes), taken out before metric
# names are looked for: a label value may look like a name.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# The scheme's names all start with chat_; a recording rule's name has
# colons, a label or a function no such prefix.
METRIC = re.compile(r"(?<![\w:])chat_[a-zA-Z0-9_]*(?![\w:])")


def metric_names(expr: str) -> set:
    return set(METRIC.findall(STRING.sub('""', expr)))


def queried() -> dict:
    """{metric name: [where it is queried]} for the rules and the dashboards."""
    found = {}

    def add(expr, where):
        for name in metric_names(expr):
            found.setdefault(name, []).append(where)

    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            add(rule["expr"], f"alert {rule.get('alert') or rule.get('record')}")
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
        for panel in panels:
            for target in panel.get("targets", []):
                add(target["expr"], f"{path.name}: {panel['title']}")
        for variable in dashboard.get("templating", {}).get("list", []):
            if isinstance(variable.get("query"), str):
                add(variable["query"], f"{path.name}: variable {variable['name']}")
    return found


def exported(text: str) -> set:
    """The series names a Prometheus text exposition offers to queries."""
    names = set()
    for line in text.splitlines():
        typed = re.match(r"# TYPE (\S+) (\w+)", line)
        if typed:
            name, kind = typed[1], typed[2]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.match(r"[^{\s]+", line)[0])
    return names


def test_the_name_extraction_finds_names_and_only_names():
    assert metric_names(
        'sum by (job) (rate(chat_http_requests_total{status=~"5..", route!~"/chat_x"}[5m]))'
        ' / histogram_quantile(0.99, sum by (le) (rate(chat_send_latency_seconds_bucket[$__rate_interval])))'
        ' + on() dashboard:chat_recorded:rate5m'
    ) == {"chat_http_requests_total", "chat_send_latency_seconds_bucket"}
    assert exported(
        "# HELP chat_a_seconds latency\n# TYPE chat_a_seconds histogram\n"
        'chat_a_seconds_bucket{le="+Inf"} 1\nchat_b_total 3\n'
    ) == {"chat_a_seconds", "chat_a_seconds_bucket", "chat_a_seconds_sum", "chat_a_seconds_count", "chat_b_total"}
    names = queried()
    # Each alert and most panels name a metric of the scheme.
    assert len(names) >= 25, sorted(names)
    assert all(name.startswith("chat_") for name in names)


def traffic(stack, chat):
    """What a user does: REST, a WebSocket message, gRPC calls and a
    stream; and what an attacker does: wrong passwords until locked out."""
    name = f"m{uuid.uuid4().hex[:8]}"
    email = f"{name}@example.com"
    registered = requests.post(f"{stack.base}/register", json={"Username": name, "Email": email, "Password": "password"})
    assert registered.status_code == 201, registered.text
    token = requests.put(f"{stack.base}/login", json={"Email": email, "Password": "password"}).json()["token"]
    auth = {"Authorization": token}
    room = requests.post(f"{stack.base}/create-room", headers=auth, json={"Name": name}).json()["RoomID"]
    assert requests.get(f"{stack.base}/messages/{room}", headers=auth).status_code == 200
    assert requests.get(f"{stack.base}/profile/999999").status_code == 404
    for _ in range(7):
        requests.put(f"{stack.base}/login", json={"Email": email, "Password": "wrong password"})

    pb, rpc = chat
    channel = grpc.insecure_channel(stack.grpc)
    metadata = [("authorization", f"Bearer {token}")]
    messages = rpc.MessageServiceStub(channel)
    stream = messages.Subscribe(pb.SubscribeRequest(room_id=room), metadata=metadata, timeout=20)
    stream.initial_metadata()

    async def socket():
        async with websockets.connect(f"{stack.ws}?token={token}") as ws:
            await asyncio.wait_for(ws.recv(), 10)
            await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
            await asyncio.wait_for(ws.recv(), 10)
            await ws.send(json.dumps({"Type": "message", "Text": "over the socket"}))
            frames = [await recv(ws) for _ in range(2)]
            assert {f["Type"] for f in frames} == {"sent", "message"}, frames
            # One sent over gRPC, delivered to this socket too.
            messages.Send(pb.SendRequest(room_id=room, text="over gRPC"), metadata=metadata)
            assert (await recv(ws))["Type"] == "message"

    asyncio.run(socket())
    assert [next(stream).text for _ in range(2)] == ["over the socket", "over gRPC"]
    stream.cancel()
    with pytest.raises(grpc.RpcError) as refused:
        rpc.UserServiceStub(channel).GetProfile(pb.GetProfileRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()


def scrape(stack) -> dict:
    endpoints = {
        "gateway": f"{stack.base}/metrics",
        "core-svc": f"http://{stack.env['METRICS_LISTEN_ADDR']}/metrics",
        "archiver": f"http://{stack.env['ARCHIVER_LISTEN_ADDR']}/metrics",
    }
    texts = {}
    for binary, url in endpoints.items():
        answer = requests.get(url, timeout=5)
        assert answer.status_code == 200, f"{binary}: {url} answered {answer.status_code}"
        texts[binary] = answer.text
    return texts


def test_every_metric_the_rules_and_dashboards_query_is_exported(stack, chat):
    traffic(stack, chat)
    wanted = queried()
    # The archiver stores the messages and the gateways' counters settle a
    # moment after the answers: scrape until nothing is missing, or a while.
    deadline = time.monotonic() + 15
    while True:
        texts = scrape(stack)
        offered = set().union(*(exported(text) for text in texts.values()))
        missing = {name: where for name, where in sorted(wanted.items()) if name not in offered}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    report = "\n".join(f"  {name}: queried by {', '.join(sorted(set(where)))}" for name, where in missing.items())
    served = {binary: sorted(n for n in exported(text) if n.startswith("chat_")) for binary, text in texts.items()}
    assert not missing, f"{len(missing)} metrics queried but exported by no binary:\n{report}\nexported: {served}"
