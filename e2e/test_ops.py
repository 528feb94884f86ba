"""What an orchestrator asks of each binary: the `healthcheck` subcommand
(the image has no shell for a health check), the metrics and health
endpoints of core-svc and the archiver, and `core-svc migrate`."""

import os
import subprocess
import uuid

import requests

from conftest import PSQL, free_port


def run(stack, binary: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    command = [os.path.join(os.environ["BIN_DIR"], binary), *args]
    return subprocess.run(command, env={**stack.env, **env}, capture_output=True, text=True, timeout=30)


def test_each_binary_answers_its_healthcheck_and_a_stopped_one_fails_it(stack):
    for binary in ("core-svc", "gateway", "archiver"):
        assert run(stack, binary, "healthcheck").returncode == 0, binary
    closed = f"127.0.0.1:{free_port()}"
    assert run(stack, "core-svc", "healthcheck", GRPC_LISTEN_ADDR=closed).returncode == 1
    assert run(stack, "gateway", "healthcheck", HTTP_LISTEN_ADDR=closed).returncode == 1
    assert run(stack, "archiver", "healthcheck", ARCHIVER_LISTEN_ADDR=closed).returncode == 1


def test_core_svc_and_the_archiver_serve_metrics_and_health(stack):
    for variable in ("METRICS_LISTEN_ADDR", "ARCHIVER_LISTEN_ADDR"):
        base = f"http://{stack.env[variable]}"
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200, variable
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200, variable
        metrics = requests.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain"), variable


def test_migrate_creates_the_schema_of_a_new_database_and_exits(stack):
    database = f"chat_e2e_migrate_{uuid.uuid4().hex[:12]}"
    subprocess.run([*PSQL, f'CREATE DATABASE "{database}"'], check=True)
    try:
        url = f"postgres://postgres@127.0.0.1:5432/{database}"
        migrated = run(stack, "core-svc", "migrate", DATABASE_URL=url)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        tables = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-tAc",
             "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('messages', 'archive_progress')"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        assert tables == "2"
        again = run(stack, "core-svc", "migrate", DATABASE_URL=url)
        assert again.returncode == 0, "migrating twice is harmless"
    finally:
        subprocess.run([*PSQL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], check=False)
