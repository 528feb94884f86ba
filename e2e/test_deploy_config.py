"""The deployment's configuration is real: the environment and arguments
that the Helm chart's Deployments and compose.yaml's services give each
binary start a working stack here, once their service host names point at
the local engines and their ports at free local ones. A renamed variable or
a port that does not match its Service breaks it.

What is changed, and how, so that nothing the manifests say is hidden:
- `host:port` of any named host becomes `127.0.0.1:port'`: the engines'
  standard ports map to the local engines (Kafka to the tests' broker), and
  every other port to one free local port, the same for every binary, so a
  client reaches a server only if the two agree on the port.
- A database URL keeps its scheme and host mapping but names a fresh
  database as the `postgres` user (the local engine trusts it).
- Names that scope a deployment (the Kafka topic and group, the NATS
  subject prefix, the Redis key prefix) get one suffix for this run,
  everywhere alike: equal values stay equal, different ones stay different.
- The local broker is one node: a replication factor becomes 1.
Everything else is passed as the manifests give it, and nothing of this
process's environment but PATH.
"""

import asyncio
import base64
import json
import os
import re
import subprocess
import time
import uuid

import pytest
import requests
import websockets
import yaml

from conftest import PSQL, free_port, new_log_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.expanduser("~/.cache/chat-tools")
BINARIES = ("core-svc", "gateway", "archiver")
ENGINE_PORTS = {"5432": "5432", "6379": "6379", "4222": "4222"}
SCOPED = ("KAFKA_TOPIC", "KAFKA_GROUP", "NATS_SUBJECT_PREFIX", "REDIS_KEY_PREFIX")


def tool(variable: str) -> str:
    path = os.environ.get(variable)
    assert path and os.access(path, os.X_OK), f"{variable} must name the tool (scripts/test sets it)"
    return path


# --- what the manifests give each binary --------------------------------------------------------


def helm_workloads(tmp_path) -> dict:
    rendered = subprocess.run(
        [tool("HELM"), "template", "chat", os.path.join(ROOT, "helm", "chat")],
        check=True, capture_output=True, text=True,
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    secrets = {d["metadata"]["name"]: decoded(d) for d in documents if d["kind"] == "Secret"}
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d["kind"] == "ConfigMap"}
    pods = [d["spec"]["template"]["spec"] for d in documents if d["kind"] in ("Deployment", "Job")]
    workloads = {}
    for pod in pods:
        for container in pod["containers"]:
            command = [*container.get("command", []), *container.get("args", [])]
            binary = os.path.basename(command[0]) if command else None
            assert binary in BINARIES, f"a container runs {command}, not one of the binaries"
            env = {}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(maps[source["configMapRef"]["name"]])
                if "secretRef" in source:
                    env.update(secrets[source["secretRef"]["name"]])
            for variable in container.get("env", []):
                env[variable["name"]] = helm_value(variable, env, secrets, maps)
            workloads[(binary, *command[1:])] = env
    return workloads


def decoded(secret: dict) -> dict:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def helm_value(variable: dict, env: dict, secrets: dict, maps: dict) -> str:
    if "value" in variable:
        # `$(NAME)` refers to a variable defined before it, as the kubelet expands it.
        return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(variable["value"]))
    source = variable["valueFrom"]
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return secrets[ref["name"]][ref["key"]]
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return maps[ref["name"]][ref["key"]]
    pytest.fail(f"{variable['name']}: a value source this test does not know: {source}")


def compose_workloads(tmp_path) -> dict:
    # .env.example with its secrets filled in, as a user does.
    example = open(os.path.join(ROOT, ".env.example")).read()
    filled = re.sub(r"^JWT_SECRET=$", "JWT_SECRET=deployed-config-test-secret-0123456789abcdef", example, flags=re.M)
    filled = re.sub(r"^POSTGRES_PASSWORD=$", "POSTGRES_PASSWORD=deployedconfig0123", filled, flags=re.M)
    env_file = tmp_path / "env"
    env_file.write_text(filled)
    config = subprocess.run(
        [tool("COMPOSE"), "--project-directory", ROOT, "--env-file", str(env_file), "-f",
         os.path.join(ROOT, "compose.yaml"), "config", "--format", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    workloads = {}
    for service in json.loads(config)["services"].values():
        command = service.get("command") or []
        if isinstance(command, str):
            command = command.split()
        entrypoint = service.get("entrypoint") or []
        command = [*entrypoint, *command]
        if not command or os.path.basename(command[0]) not in BINARIES:
            continue
        workloads[(os.path.basename(command[0]), *command[1:])] = dict(service.get("environment") or {})
    return workloads


# --- mapped onto this machine -------------------------------------------------------------------


class Mapping:
    def __init__(self, database: str, run: str):
        self.database, self.run, self.ports = database, run, {}
        kafka = os.environ.get("TEST_KAFKA_BROKERS", "127.0.0.1:9092").split(":")[-1]
        self.engine_ports = {**ENGINE_PORTS, "9092": kafka}

    def port(self, port: str) -> str:
        if port in self.engine_ports:
            return self.engine_ports[port]
        return self.ports.setdefault(port, str(free_port()))

    def value(self, name: str, value: str) -> str:
        if name == "KAFKA_REPLICATION_FACTOR":
            return "1"
        if name in SCOPED:
            return f"{value}-{self.run}"
        if value.startswith(("postgres://", "postgresql://")):
            rest = value.split("://", 1)[1].split("@")[-1]
            host_port = rest.split("/")[0].split("?")[0]
            port = host_port.rsplit(":", 1)[1] if ":" in host_port else "5432"
            return f"postgres://postgres@127.0.0.1:{self.port(port)}/{self.database}"
        # Any named host, or an unspecified listen address, with a port.
        return re.sub(
            r"(?<![\w.-])(0\.0\.0\.0|\[::\]|[a-zA-Z][\w.-]*):(\d+)",
            lambda m: f"127.0.0.1:{self.port(m.group(2))}",
            value,
        )


def env_names(binary: str) -> set:
    """The environment variables a binary reads, from its `--help`."""
    help_text = subprocess.run([os.path.join(os.environ["BIN_DIR"], binary), "--help"],
                               check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"\[env: (\w+)", help_text))


# --- the test ----------------------------------------------------------------------------------


SOURCES = {"helm": helm_workloads, "compose": compose_workloads}
NEEDED = {
    "core-svc": {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "KAFKA_BROKERS", "NATS_URL", "APP_ENV"},
    "gateway": {"CORE_GRPC_ADDR", "NATS_URL", "REDIS_URL"},
    "archiver": {"DATABASE_URL", "KAFKA_BROKERS"},
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_the_deployed_configuration_starts_a_stack_that_carries_a_message_to_history(source, tmp_path):
    workloads = SOURCES[source](tmp_path)
    servers = {key[0]: env for key, env in workloads.items() if len(key) == 1}
    assert set(servers) == set(BINARIES), f"{source} runs {sorted(workloads)}"
    assert ("core-svc", "migrate") in workloads, f"{source} runs no migration"
    for binary, env in servers.items():
        unknown = set(env) - env_names(binary) - {"RUST_LOG", "LOG_FORMAT"} - {k for k in env if k.startswith("OTEL_")}
        assert not unknown, f"{source}: {binary} is given variables it does not read: {sorted(unknown)}"
        missing = NEEDED[binary] - set(env)
        assert not missing, f"{source}: {binary} lacks {sorted(missing)}"

    run = uuid.uuid4().hex[:10]
    database = f"chat_deploy_{run}"
    subprocess.run([*PSQL, f'CREATE DATABASE "{database}"'], check=True)
    mapping = Mapping(database, run)
    mapped = {key: {k: mapping.value(k, str(v)) for k, v in env.items()} for key, env in workloads.items()}
    processes = []
    try:
        migrate = mapped[("core-svc", "migrate")]
        done = subprocess.run([binary_path("core-svc"), "migrate"], env=clean(migrate), capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        logs = new_log_dir(f"chat-e2e-deploy-{source}-")
        for binary in BINARIES:
            log = open(logs / f"{binary}.log", "w")
            processes.append(subprocess.Popen([binary_path(binary)], env=clean(mapped[(binary,)]), stdout=log,
                                              stderr=subprocess.STDOUT))
        gateway_listen = mapped[("gateway",)].get("HTTP_LISTEN_ADDR", "127.0.0.1:8080")
        base = f"http://{gateway_listen}"
        wait_ready(base, logs)
        message_id, room = asyncio.run(socket_to_history(base))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            archived = subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-tAc",
                 f"SELECT count(*) FROM messages WHERE id = {message_id} AND room_id = {room}"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()
            if archived == "1":
                break
            time.sleep(0.2)
        assert archived == "1", f"{source}: the message never reached history; logs in {logs}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run([*PSQL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], check=False)


def binary_path(binary: str) -> str:
    return os.path.join(os.environ["BIN_DIR"], binary)


def clean(env: dict) -> dict:
    return {"PATH": os.environ["PATH"], **env}


def wait_ready(base: str, logs) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the stack did not become ready at {base}; logs in {logs}")


async def socket_to_history(base: str):
    body = {"Username": "deployed", "Email": "deployed@example.com", "Password": "password"}
    assert requests.post(f"{base}/register", json=body).status_code == 201
    token = requests.put(f"{base}/login", json={"Email": body["Email"], "Password": "password"}).json()["token"]
    room = requests.post(f"{base}/create-room", headers={"Authorization": token}, json={"Name": "deployed"}).json()[
        "RoomID"]
    async with websockets.connect(f"{base.replace('http', 'ws', 1)}/ws?token={token}") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"Type": "enter", "RoomID": 0}
        await ws.send(json.dumps({"Type": "enter", "RoomID": room}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"Type": "enter", "RoomID": room}
        await ws.send(json.dumps({"Type": "message", "Text": "deployed and delivered"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["Type"] == "sent":
                return frame["MessageID"], room
            assert frame["Type"] in ("online", "message"), frame
