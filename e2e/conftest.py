"""Starts the real binaries (from $BIN_DIR) on free ports against a fresh
database, for tests that drive them as independent clients would."""

import contextlib
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    base: str
    ws: str
    grpc: str
    database: str
    env: dict
    log_dir: object
    processes: dict

    def start(self, name: str) -> None:
        log = open(self.log_dir / f"{name}.log", "a")
        binary = os.path.join(os.environ["BIN_DIR"], name)
        self.processes[name] = subprocess.Popen([binary], env=self.env, stdout=log, stderr=subprocess.STDOUT)

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
        "JWT_SECRET": "end-to-end-test-secret-0123456789abcdef",
        "KAFKA_TOPIC": f"e2e-{run_id}.messages",
        "KAFKA_GROUP": f"e2e-{run_id}-archiver",
        "NATS_SUBJECT_PREFIX": f"e2e-{run_id}",
        "SEND_RATE_PER_SECOND": "100000",
        "SEND_BURST": "100000",
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
def start_stack():
    """The three binaries on free ports against a fresh database and the
    engines that the environment names; stopped with SIGTERM at the end."""
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
    }
    base = f"http://127.0.0.1:{gateway_port}"
    stack = Stack(
        base=base,
        ws=f"ws://127.0.0.1:{gateway_port}/ws",
        grpc=f"127.0.0.1:{core_port}",
        database=database,
        env=env,
        log_dir=pathlib.Path(tempfile.mkdtemp(prefix="chat-e2e-logs-")),
        processes={},
    )
    for name in ("core-svc", "gateway", "archiver"):
        stack.start(name)
    log_dir = stack.log_dir
    wait_ready(f"{base}/readyz", "the stack", log_dir)
    try:
        yield stack
    finally:
        # A graceful stop on SIGTERM exits 0.
        codes = {}
        for name in ("gateway", "archiver", "core-svc"):
            process = stack.processes[name]
            process.send_signal(signal.SIGTERM)
            try:
                codes[name] = process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = "killed after 15 s"
        subprocess.run([*PSQL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], check=False)
        assert codes == {"gateway": 0, "archiver": 0, "core-svc": 0}, f"unclean shutdown {codes}; logs in {log_dir}"


@pytest.fixture(scope="module")
def stack():
    with start_stack() as stack:
        yield stack


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
