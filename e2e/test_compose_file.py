"""What a reviewer checks in compose.yaml, on the file as `docker compose
config` renders it (no engine needed): health checks, dependency
conditions, replicas, secrets only from .env, the binaries' variable names
against the README's Configuration table, and the proxy's WebSocket
headers.

Needs the Compose v2 CLI that scripts/check-compose installs into the tool
cache (or COMPOSE naming one, as for e2e/test_deploy_config.py); without it
every test that renders the file fails, saying so, rather than being
skipped."""

import fnmatch
import functools
import json
import os
import pathlib
import re
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARIES = {"core-svc", "gateway", "archiver"}
OBSERVABILITY = {"jaeger", "prometheus", "grafana"}
CLEAR_MESSAGE = "set {} in .env, see README"


def compose_cli() -> pathlib.Path:
    """The `docker-compose` binary: $COMPOSE, else the one that
    scripts/check-compose puts in the tool cache."""
    if os.environ.get("COMPOSE"):
        cli = pathlib.Path(os.environ["COMPOSE"])
    else:
        version = re.search(r"^COMPOSE_VERSION=(\S+)$", (ROOT / "scripts/check-compose").read_text(), re.M)
        assert version, "scripts/check-compose names no COMPOSE_VERSION"
        tools = pathlib.Path(os.environ.get("CHAT_TOOLS_DIR", pathlib.Path.home() / ".cache/chat-tools"))
        cli = tools / f"compose-{version[1]}" / "docker-compose"
    if not os.access(cli, os.X_OK):
        pytest.fail(f"the Compose v2 CLI is not at {cli}: run scripts/check-compose, which installs it")
    return cli


JWT = "test-compose-file-jwt-secret-0123456789abcdef"
PASSWORD = "testcomposefile0123456789"


def env_text(**values) -> str:
    """.env.example with the given variables set (an empty string empties
    one; None leaves its line out)."""
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        if not line.startswith("#") and "=" in line and name in values:
            if values[name] is None:
                continue
            line = f"{name}={values[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_compose(*args: str, **values) -> subprocess.CompletedProcess:
    """The CLI on compose.yaml with an env file made from .env.example and
    `values`, in a clean environment: only the env file sets variables."""
    cli = compose_cli()
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    with tempfile.NamedTemporaryFile("w", prefix="compose-env-") as env:
        env.write(env_text(**values))
        env.flush()
        command = [str(cli), "--project-directory", str(ROOT), "-f", str(ROOT / "compose.yaml"), "--env-file", env.name, *args]
        return subprocess.run(command, env=clean, capture_output=True, text=True, timeout=60)


@functools.cache
def rendered(*profiles: str, interpolate: bool = True) -> dict:
    """`docker compose config --format json`, with the secrets set."""
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    args += ["config", "--format", "json"] + ([] if interpolate else ["--no-interpolate"])
    result = run_compose(*args, JWT_SECRET=JWT, POSTGRES_PASSWORD=PASSWORD)
    assert result.returncode == 0, f"docker compose {' '.join(args)} failed: {result.stderr}"
    return json.loads(result.stdout)


def everything() -> dict:
    return rendered("observability")["services"]


def chat_image() -> str:
    built = [s for s in everything().values() if s.get("build")]
    assert len(built) == 1, "exactly one service builds the project's image (so it is built once)"
    return built[0]["image"]


def binary_services() -> dict:
    """Services running the project's image, with the binary each runs."""
    image = chat_image()
    found = {name: s for name, s in everything().items() if s.get("image") == image}
    for name, service in found.items():
        assert service["command"][0] in BINARIES, f"{name} runs {service['command']}, not one of the binaries"
    return found


def one_shots(services: dict) -> set:
    return {
        target
        for service in services.values()
        for target, dep in service.get("depends_on", {}).items()
        if dep["condition"] == "service_completed_successfully"
    }


def test_it_renders_without_a_profile_and_with_each_profile():
    plain = set(rendered()["services"])
    full = set(everything())
    assert {"postgres", "redis", "nats", "kafka", "migrate", "core-svc", "gateway", "archiver", "proxy"} <= plain
    assert not plain & OBSERVABILITY, "the observability services run only with their profile"
    assert full - plain == OBSERVABILITY
    for name in OBSERVABILITY:
        assert everything()[name]["profiles"] == ["observability"]


def test_every_long_running_service_has_a_health_check():
    services = everything()
    assert one_shots(services) == {"migrate"}
    assert services["migrate"].get("restart") == "no"
    for name, service in services.items():
        if name in one_shots(services):
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}'s health check {check['test']}"
        assert "interval" in check and "timeout" in check and "retries" in check, f"{name}: {check}"


def test_the_binaries_check_their_health_with_their_own_subcommand_and_no_shell():
    for name, service in binary_services().items():
        if name == "migrate":
            continue
        assert service["healthcheck"]["test"] == ["CMD", service["command"][0], "healthcheck"], name


def test_every_dependency_waits_for_a_condition():
    services = everything()
    for name, service in services.items():
        for target, dep in service.get("depends_on", {}).items():
            assert dep["condition"] in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {target} waits only for the start ({dep['condition']})"
            )
            if dep["condition"] == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target}'s health, which it lacks"


def test_migrate_runs_before_the_binaries_that_use_the_database():
    services = everything()
    assert services["migrate"]["command"] == ["core-svc", "migrate"]
    for name in ("core-svc", "archiver"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["core-svc"]["depends_on"].keys() >= {"redis", "nats", "kafka"}
    assert services["gateway"]["depends_on"]["core-svc"]["condition"] == "service_healthy"
    assert services["proxy"]["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_nothing_outside_the_profile_depends_on_observability():
    for name, service in rendered()["services"].items():
        assert not set(service.get("depends_on", {})) & OBSERVABILITY, name


def test_core_svc_and_gateway_run_two_replicas():
    services = everything()
    for name in ("core-svc", "gateway"):
        assert services[name].get("deploy", {}).get("replicas") == 2, name
        # Replicas can share neither a container name nor a host port.
        assert "container_name" not in services[name] and not services[name].get("ports"), name


def test_only_the_proxy_publishes_a_port_and_the_uis_only_on_loopback():
    services = everything()
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert [(p["published"], p["target"]) for p in published.pop("proxy")] == [("8080", 8080)]
    assert set(published) <= OBSERVABILITY, f"published: {sorted(published)}"
    for name, ports in published.items():
        assert all(p.get("host_ip") == "127.0.0.1" for p in ports), f"{name} is published beyond loopback"


def test_data_lives_in_named_volumes():
    services = everything()
    wanted = {
        "postgres": "/var/lib/postgresql/data",
        "kafka": "/var/lib/kafka/data",
        "nats": "/data",
        "prometheus": "/prometheus",
        "grafana": "/var/lib/grafana",
    }
    declared = set(rendered("observability")["volumes"])
    for name, target in wanted.items():
        volumes = [v for v in services[name].get("volumes", []) if v["target"] == target]
        assert volumes and volumes[0]["type"] == "volume", f"{name}'s {target} is not a named volume"
        assert volumes[0]["source"] in declared
    if services["kafka"]["environment"].get("KAFKA_LOG_DIRS"):
        assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == wanted["kafka"]


SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|_KEY$|CREDENTIAL")
# ${NAME}, ${NAME:?message} or ${NAME?message}: no default that could
# stand in for the secret.
REFERENCE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(?:[:]?\?[^}]*)?\}$")


def test_no_secret_is_written_in_compose_yaml():
    raw = rendered("observability", interpolate=False)["services"]
    for name, service in raw.items():
        for key, value in (service.get("environment") or {}).items():
            value = None if value is None else str(value)
            if SECRET_NAME.search(key):
                assert value is None or REFERENCE.match(value), f"{name}: {key} is written in compose.yaml ({value!r})"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value or ""):
                assert REFERENCE.match(password), f"{name}: {key} carries a password written in compose.yaml"
    # The secrets that are set reach the services from the env file.
    services = everything()
    assert services["core-svc"]["environment"]["JWT_SECRET"] == JWT
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD
    assert f":{PASSWORD}@postgres:" in services["core-svc"]["environment"]["DATABASE_URL"]
    # Only core-svc (and migrate, which is core-svc) holds the signing key.
    holders = {name for name, s in services.items() if "JWT_SECRET" in (s.get("environment") or {})}
    assert holders == {"core-svc", "migrate"}
    text = (ROOT / "compose.yaml").read_text()
    assert JWT not in text and PASSWORD not in text


@pytest.mark.parametrize("secret", ["JWT_SECRET", "POSTGRES_PASSWORD"])
@pytest.mark.parametrize("how", ["empty", "absent"])
def test_a_missing_secret_stops_compose_with_a_clear_message(secret, how):
    values = {"JWT_SECRET": JWT, "POSTGRES_PASSWORD": PASSWORD, secret: "" if how == "empty" else None}
    result = run_compose("config", "--quiet", **values)
    assert result.returncode != 0, f"docker compose config ran with {secret} {how}"
    assert CLEAR_MESSAGE.format(secret) in result.stderr, result.stderr


def test_env_example_leaves_the_secrets_empty():
    example = (ROOT / ".env.example").read_text()
    for secret in ("JWT_SECRET", "POSTGRES_PASSWORD"):
        assert re.search(rf"^{secret}=$", example, re.M), f".env.example should leave {secret}= empty"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def configuration_table(path: pathlib.Path, heading: re.Pattern) -> dict:
    """{variable: "used by" cell} from the table under the first heading
    that matches."""
    rows, inside = {}, False
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            if inside:
                break
            inside = bool(heading.search(line))
            continue
        if inside and line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            for name in re.findall(r"`([A-Z][A-Z0-9_]*)", cells[0]):
                rows[name] = cells[-1]
    return rows


def documented_variables() -> dict:
    """The README's Configuration table."""
    rows = configuration_table(ROOT / "README.md", re.compile(r"^## Configuration\s*$"))
    assert len(rows) > 10, "the README's Configuration table was not found"
    return rows


def test_the_binaries_variables_are_the_documented_ones():
    documented = documented_variables()
    for name, service in binary_services().items():
        binary = service["command"][0]
        for key in service.get("environment") or {}:
            assert key in documented, f"{name}: {key} is not in the README's Configuration table (misspelled?)"
            used_by = documented[key]
            assert used_by == "all" or binary in used_by, f"{name} ({binary}) sets {key}, which the README gives to {used_by}"


def test_the_binaries_agree_on_their_shared_settings():
    services = everything()
    core, gateway, archiver = (services[n]["environment"] for n in ("core-svc", "gateway", "archiver"))
    assert services["migrate"]["environment"] == core
    assert core["APP_ENV"] == "production"
    assert core["NATS_SUBJECT_PREFIX"] == gateway["NATS_SUBJECT_PREFIX"]
    assert core["NATS_URL"] == gateway["NATS_URL"]
    assert core["REDIS_URL"] == gateway["REDIS_URL"], "presence is kept in core-svc's Redis"
    assert core["KAFKA_TOPIC"] == archiver["KAFKA_TOPIC"] and core["KAFKA_BROKERS"] == archiver["KAFKA_BROKERS"]
    assert core["DATABASE_URL"] == archiver["DATABASE_URL"]
    assert int(core["KAFKA_PARTITIONS"]) >= 1
    assert gateway["CORE_GRPC_ADDR"] == "http://core-svc:50051"
    assert core["GRPC_LISTEN_ADDR"] == "0.0.0.0:50051", "the gateways dial core-svc's gRPC port"
    assert gateway["TRUST_FORWARDED_FOR"] == "true"
    assert core["TRUSTED_PROXIES"], "core-svc must believe the gateways' X-Forwarded-For"
    assert services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{core['KAFKA_BROKERS']}"


def mounted(service: str, target: str) -> pathlib.Path:
    volumes = [v for v in everything()[service]["volumes"] if v["target"] == target]
    assert volumes and volumes[0]["type"] == "bind", f"{service} mounts nothing at {target}"
    return pathlib.Path(volumes[0]["source"])


def test_the_proxy_passes_websocket_upgrades_and_the_clients_address():
    path = mounted("proxy", "/etc/nginx/nginx.conf")
    assert path == ROOT / "deploy/compose/nginx.conf"
    conf = re.sub(r"#.*", "", path.read_text())
    mapping = re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{([^}]*)\}", conf)
    assert mapping and re.search(r"default\s+upgrade\s*;", mapping[1]), "no map from Upgrade to Connection"
    location = re.search(r"location\s+/\s*\{([^}]*)\}", conf)
    assert location, "no `location /`"
    body = location[1]
    for directive in (
        r"proxy_pass\s+http://gateway\s*;",
        r"proxy_http_version\s+1\.1\s*;",
        r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;",
        r"proxy_set_header\s+Connection\s+\$connection_upgrade\s*;",
        # The gateway believes the first X-Forwarded-For entry: the proxy
        # replaces the client's header rather than appending to it.
        r"proxy_set_header\s+X-Forwarded-For\s+\$remote_addr\s*;",
    ):
        assert re.search(directive, body), f"`location /` lacks {directive}"
    assert "$proxy_add_x_forwarded_for" not in conf
    upstream = re.search(r"upstream\s+gateway\s*\{([^}]*)\}", conf)
    assert upstream and re.search(r"server\s+gateway:8080\b", upstream[1]), "the upstream is not the gateways"
    assert re.search(r"location\s+=\s+/metrics\s*\{\s*return\s+404\s*;", conf), "/metrics is public"


def test_prometheus_scrapes_every_replica_of_every_binary():
    path = mounted("prometheus", "/etc/prometheus/prometheus.yml")
    jobs = re.split(r"^\s*- job_name:\s*", path.read_text(), flags=re.M)[1:]
    found = {}
    for job in jobs:
        name = job.split()[0]
        names = re.search(r"names:\s*\[([^\]]*)\]", job)
        port = re.search(r"port:\s*(\d+)", job)
        kind = re.search(r"type:\s*(\w+)", job)
        if names and port and kind:
            found[name] = (names[1].strip(), kind[1], int(port[1]))
    # The ports the binaries are told to serve their metrics on.
    services = everything()

    def port(service: str, variable: str) -> int:
        return int(services[service]["environment"][variable].rsplit(":", 1)[1])

    assert found == {
        "gateway": ("gateway", "A", port("gateway", "HTTP_LISTEN_ADDR")),
        "core-svc": ("core-svc", "A", port("core-svc", "METRICS_LISTEN_ADDR")),
        "archiver": ("archiver", "A", port("archiver", "ARCHIVER_LISTEN_ADDR")),
    }
    assert set(found.values()) == {("gateway", "A", 8080), ("core-svc", "A", 9090), ("archiver", "A", 8081)}


def test_prometheus_loads_the_charts_alert_rules():
    # The chart's rules file is the one copy: compose mounts it where
    # prometheus.yml's rule_files look.
    config = mounted("prometheus", "/etc/prometheus/prometheus.yml").read_text()
    rule_files = re.search(r"^rule_files:\s*\n((?:\s+-\s*\S+\n)+)", config, re.M)
    assert rule_files, "prometheus.yml loads no rule files"
    patterns = re.findall(r"-\s*(\S+)", rule_files[1])
    rules = [v for v in everything()["prometheus"]["volumes"] if v["type"] == "bind" and v["source"].endswith(".yaml")
             and any(fnmatch.fnmatch(v["target"], pattern) for pattern in patterns)]
    assert [pathlib.Path(v["source"]) for v in rules] == [ROOT / "helm/chat/files/alerts.yaml"]
    assert all(v.get("read_only") for v in rules)
    assert "alert: ChatArchiverLagging" in (ROOT / "helm/chat/files/alerts.yaml").read_text()


def test_grafana_is_provisioned_with_prometheus_and_the_charts_dashboards():
    provisioning = mounted("grafana", "/etc/grafana/provisioning")
    datasources = (provisioning / "datasources/datasources.yaml").read_text()
    prometheus = re.search(r"- name: Prometheus\n((?:\s{4}.*\n)+)", datasources)
    assert prometheus and "url: http://prometheus:9090" in prometheus[1]
    # The dashboards' datasource variable picks the default Prometheus.
    assert re.search(r"^\s+isDefault: true$", prometheus[1], re.M)
    provider = (provisioning / "dashboards/chat.yaml").read_text()
    path = re.search(r"path:\s*(\S+)", provider)[1]
    folder = mounted("grafana", path)
    # The chart's folder is the one copy: its ConfigMap carries the same files.
    assert folder == ROOT / "helm/chat/files/dashboards"
    dashboards = sorted(folder.glob("*.json"))
    assert dashboards, "no dashboard in helm/chat/files/dashboards"
    for dashboard in dashboards:
        parsed = json.loads(dashboard.read_text())
        assert parsed.get("title") and parsed.get("uid") and isinstance(parsed.get("panels"), list), dashboard.name
        variables = {v["name"]: v for v in parsed["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for panel in parsed["panels"]:
            if panel["type"] != "row":
                refs = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
                assert all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs), panel["title"]


def test_the_image_runs_as_nonroot_without_a_shell():
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.rindex("\nFROM ") :]
    assert re.match(r"\nFROM scratch AS runtime\b", runtime)
    assert re.search(r"^USER 65532:65532$", runtime, re.M)
    assert re.search(r'^\s*CMD \["gateway", "healthcheck"\]$', runtime, re.M), "HEALTHCHECK is not exec form"
    assert re.search(r'^CMD \["gateway"\]$', runtime, re.M)
    labels = set(re.findall(r"org\.opencontainers\.image\.(\w+)=", runtime))
    assert {"title", "description", "licenses", "version", "revision"} <= labels
    assert "cargo build --release --locked --bins" in dockerfile
    # The web client, built in a stage of its own, is served from the image.
    assert "COPY --from=web /web/dist/ /usr/share/chat/web/" in runtime
    assert re.search(r"^ENV .*\bWEB_DIR=/usr/share/chat/web\b", runtime, re.M)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!web/" in ignored and "web/node_modules/" in ignored
    assert everything()["migrate"]["build"]["target"] == "runtime"
