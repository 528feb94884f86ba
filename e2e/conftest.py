"""Starts the real binaries (from $BIN_DIR) on free ports against a fresh
database, for tests that drive them as independent clients would; and a
Jaeger of the tests' own ($JAEGER, built by scripts/test) for the tracing
tests."""

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

import pytest
import requests
from grpc_tools import protoc

PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
PROTO_ROOT = pathlib.Path(__file__).resolve().parent.parent / "proto"


# Where the binaries' logs go: a folder of its own for each stack, under
# $CHAT_E2E_LOG_DIR when it is set (scripts/test sets it, and scans the
# logs for secrets at the end: scripts/scan-logs), else under the system's
# temporary folder.
LOG_ROOT = os.environ.get("CHAT_E2E_LOG_DIR")
JWT_SECRET = "end-to-end-test-secret-0123456789abcdef"


def record_canary(value: str) -> None:
    if LOG_ROOT:
        os.makedirs(LOG_ROOT, exist_ok=True)
        with open(os.path.join(LOG_ROOT, "canaries.txt"), "a") as canaries:
            canaries.write(value + "\n")


# The token secret of every stack is one of them.
record_canary(JWT_SECRET)


def new_log_dir(prefix: str) -> pathlib.Path:
    if LOG_ROOT:
        os.makedirs(LOG_ROOT, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=LOG_ROOT))


def canary(kind: str) -> str:
    """A value the tests send on purpose (a password, a message text, a
    bad token) and which no log may hold: listed for scripts/scan-logs."""
    value = f"canary-{kind}-{uuid.uuid4().hex[:12]}"
    record_canary(value)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Frames about who is in the room and typing, which come whenever other
# members come, go and type; tests about messages pass over them.
SIDE = {"online", "presence", "typing"}


async def recv(ws):
    """The next WebSocket frame that is not a side frame."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["Type"] not in SIDE:
            return frame


@dataclass
class Stack:
    base: str
    ws: str
    grpc: str
    database: str
    env: dict
    log_dir: object
    processes: dict
    # Settings of one binary only, by name, over `env`.
    env_for: dict

    def start(self, name: str, binary: str | None = None, **env: str) -> subprocess.Popen:
        """Starts `binary` (by default the one called `name`) as `name`,
        with `env` over the stack's settings. Stopped with the stack."""
        log = open(self.log_dir / f"{name}.log", "a")
        path = os.path.join(os.environ["BIN_DIR"], binary or name)
        env = {**self.env, **self.env_for.get(name, {}), **env}
        process = subprocess.Popen([path], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def stop(self, name: str) -> int | str:
        """SIGTERM, then the exit code (or why there is none)."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            return "killed after 15 s"

    def psql(self, sql: str) -> str:
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", self.database, "-tAc", sql],
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def run_env(run_id: str, database: str) -> dict:
    """The environment every binary of one run shares: its database, key
    prefix, topic, group and subjects, and limits a test does not hit."""
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_KEY_PREFIX": f"e2e-{run_id}:",
        "JWT_SECRET": JWT_SECRET,
        "KAFKA_TOPIC": f"e2e-{run_id}.messages",
        "KAFKA_GROUP": f"e2e-{run_id}-archiver",
        "NATS_SUBJECT_PREFIX": f"e2e-{run_id}",
        "SEND_RATE_PER_SECOND": "100000",
        "SEND_BURST": "100000",
        "REGISTER_PER_MINUTE_PER_IP": "100000",
        "CREATE_ROOM_PER_MINUTE": "100000",
        "INVITE_PER_MINUTE": "100000",
        "DIRECT_PER_MINUTE": "100000",
        "REACT_PER_MINUTE": "100000",
        "SEARCH_PER_MINUTE": "100000",
        "LOG_FORMAT": "json",
    }


def wait_ready(url: str, what: str, log_dir, seconds: float = 30) -> None:
    """Waits (at most `seconds`) for `url` to answer 200."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not become ready; logs in {log_dir}")
        time.sleep(0.1)


@contextlib.contextmanager
def start_stack(env: dict | None = None, env_for: dict | None = None):
    """The three binaries on free ports against a fresh database and the
    engines that the environment names, with `env` over the settings (and
    `env_for` a binary's own, by name); stopped with SIGTERM at the end."""
    run_id = uuid.uuid4().hex[:12]
    database = f"chat_e2e_{run_id}"
    subprocess.run([*PSQL, f'CREATE DATABASE "{database}"'], check=True)
    core_port, gateway_port = free_port(), free_port()
    core_ops_port, archiver_ops_port = free_port(), free_port()
    env = {
        **run_env(run_id, database),
        "GRPC_LISTEN_ADDR": f"127.0.0.1:{core_port}",
        "HTTP_LISTEN_ADDR": f"127.0.0.1:{gateway_port}",
        "CORE_GRPC_ADDR": f"http://127.0.0.1:{core_port}",
        "METRICS_LISTEN_ADDR": f"127.0.0.1:{core_ops_port}",
        "ARCHIVER_LISTEN_ADDR": f"127.0.0.1:{archiver_ops_port}",
        **(env or {}),
    }
    base = f"http://127.0.0.1:{gateway_port}"
    stack = Stack(
        base=base,
        ws=f"ws://127.0.0.1:{gateway_port}/ws",
        grpc=f"127.0.0.1:{core_port}",
        database=database,
        env=env,
        log_dir=new_log_dir("chat-e2e-logs-"),
        processes={},
        env_for=env_for or {},
    )
    for name in ("core-svc", "gateway", "archiver"):
        stack.start(name)
    log_dir = stack.log_dir
    try:
        # Inside: a stack that never becomes ready is stopped all the same.
        wait_ready(f"{base}/readyz", "the stack", log_dir)
        yield stack
    finally:
        # A graceful stop on SIGTERM exits 0: the gateways first, core-svc last.
        order = sorted(stack.processes, key=lambda name: (name == "core-svc", name == "archiver"))
        codes = {name: stack.stop(name) for name in order}
        subprocess.run([*PSQL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], check=False)
        assert set(codes.values()) == {0}, f"unclean shutdown {codes}; logs in {log_dir}"


@pytest.fixture(scope="module")
def stack():
    with start_stack() as stack:
        yield stack


@dataclass
class Jaeger:
    """A running Jaeger: where it takes OTLP, and its HTTP query API."""

    otlp_grpc: str
    otlp_http: str
    query: str

    def get(self, path: str, **params) -> dict:
        r = requests.get(f"{self.query}{path}", params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def services(self) -> list[str]:
        return self.get("/api/services")["data"] or []

    def traces(self, service: str, **params) -> list[dict]:
        """The traces holding spans of `service` (params: operation, tags, limit, ...)."""
        if "tags" in params:
            params["tags"] = json.dumps(params["tags"])
        return self.get("/api/traces", service=service, limit=1000, lookback="1h", **params)["data"] or []

    def trace(self, trace_id: str) -> dict | None:
        r = requests.get(f"{self.query}/api/traces/{trace_id}", timeout=10)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        data = r.json()["data"]
        return data[0] if data else None


@pytest.fixture(scope="module")
def jaeger():
    """Jaeger v2 with in-memory storage (e2e/jaeger.yaml) on free ports,
    stopped by its pid at the end."""
    binary = os.environ.get("JAEGER") or os.path.expanduser("~/.cache/chat-tools/jaeger-1.76.0/jaeger")
    assert os.access(binary, os.X_OK), f"no Jaeger at {binary}: scripts/test builds it (ensure_jaeger in scripts/lib.sh)"
    ports = {
        name: str(free_port())
        for name in ("JAEGER_OTLP_GRPC_PORT", "JAEGER_OTLP_HTTP_PORT", "JAEGER_QUERY_PORT", "JAEGER_QUERY_GRPC_PORT", "JAEGER_HEALTH_PORT")
    }
    log_path = pathlib.Path(tempfile.mkdtemp(prefix="chat-e2e-jaeger-")) / "jaeger.log"
    config = pathlib.Path(__file__).parent / "jaeger.yaml"
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary, "--config", str(config)], env={**os.environ, **ports}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"Jaeger exited with {process.returncode}; its log is {log_path}"
            try:
                if requests.get(f"http://127.0.0.1:{ports['JAEGER_HEALTH_PORT']}/status", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"Jaeger did not become healthy; its log is {log_path}"
            time.sleep(0.2)
        yield Jaeger(
            otlp_grpc=f"http://127.0.0.1:{ports['JAEGER_OTLP_GRPC_PORT']}",
            otlp_http=f"http://127.0.0.1:{ports['JAEGER_OTLP_HTTP_PORT']}",
            query=f"http://127.0.0.1:{ports['JAEGER_QUERY_PORT']}",
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def chat(tmp_path_factory):
    """The `chat.v1.chat_pb2` and `chat_pb2_grpc` modules, generated from
    proto/ at test time."""
    out = tmp_path_factory.mktemp("stubs")
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_ROOT / "chat/v1/chat.proto"),
        ]
    )
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from chat.v1 import chat_pb2, chat_pb2_grpc

    yield chat_pb2, chat_pb2_grpc
    sys.path.remove(str(out))
