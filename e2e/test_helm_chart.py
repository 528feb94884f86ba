"""What a reviewer checks in the manifests that helm/chat renders: probes,
resources and a restricted security context on every container, no secret
in a ConfigMap, each binary's environment by the names of the README's
Configuration table, ports that match their Services, the migrations hook,
a JWT secret that stays put, and a values schema that refuses mistakes.

Needs Helm: $HELM, else the one scripts/check-helm installs into the tool
cache ($HELM3 too, if set, for the lookup tests). No cluster is needed:
where the chart asks the cluster (lookup), a read-only stand-in for the
Kubernetes API on 127.0.0.1 answers."""

import base64
import contextlib
import json
import os
import pathlib
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "chat"
TOOLS = pathlib.Path(os.environ.get("CHAT_TOOLS_DIR", pathlib.Path.home() / ".cache" / "chat-tools"))
CASES = ["default"] + sorted(p.stem for p in (CHART / "ci").glob("*-values.yaml"))

# What each binary cannot do without (beyond the defaults that suit a
# laptop, which are wrong in a cluster).
REQUIRED = {
    "core-svc": {
        "GRPC_LISTEN_ADDR", "METRICS_LISTEN_ADDR", "DATABASE_URL", "REDIS_URL", "REDIS_KEY_PREFIX",
        "JWT_SECRET", "APP_ENV", "KAFKA_BROKERS", "KAFKA_TOPIC", "KAFKA_PARTITIONS", "KAFKA_REPLICATION_FACTOR", "NATS_URL",
        "NATS_SUBJECT_PREFIX", "TRUSTED_PROXIES", "SEND_RATE_PER_SECOND", "SEND_BURST",
        "TOKEN_LIFETIME_SECS", "LOGIN_MAX_FAILURES", "LOGIN_LOCKOUT_SECS",
        "LOGIN_ATTEMPTS_PER_MINUTE_PER_IP", "REGISTER_PER_MINUTE_PER_IP", "CREATE_ROOM_PER_MINUTE",
        "INVITE_PER_MINUTE", "DIRECT_PER_MINUTE", "REACT_PER_MINUTE", "SEARCH_PER_MINUTE", "PASSWORD_HASH_WAIT_MS", "SUBSCRIBE_QUEUE_MESSAGES",
        "RUST_LOG", "LOG_FORMAT",
    },
    "gateway": {
        "HTTP_LISTEN_ADDR", "CORE_GRPC_ADDR", "NATS_URL", "NATS_SUBJECT_PREFIX", "WS_QUEUE_FRAMES",
        "TRUST_FORWARDED_FOR", "REDIS_URL", "REDIS_KEY_PREFIX", "RUST_LOG", "LOG_FORMAT",
    },
    "archiver": {"ARCHIVER_LISTEN_ADDR", "DATABASE_URL", "KAFKA_BROKERS", "KAFKA_TOPIC", "KAFKA_GROUP", "RUST_LOG", "LOG_FORMAT"},
}
# Set by the chart though the README's table does not list them: the
# kubelet expands them into a URL (the passwords).
NOT_IN_README = {
    "core-svc": {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "NATS_PASSWORD"},
    "gateway": {"REDIS_PASSWORD", "NATS_PASSWORD"},
    "archiver": {"POSTGRES_PASSWORD"},
}
# The standard OpenTelemetry variables, and the ci files' extraEnv.
ANY_BINARY = re.compile(r"^(OTEL_[A-Z_]+|POD_NAME)$")


def helm_binary() -> str:
    helm = os.environ.get("HELM") or str(TOOLS / "helm4" / "helm")
    if not os.access(helm, os.X_OK):
        pytest.fail(f"no Helm at {helm}: run scripts/check-helm, which installs it there, or set HELM", pytrace=False)
    return helm


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}", pytrace=False)
    return result


def values_args(case: str) -> list:
    return [] if case == "default" else ["-f", str(CHART / "ci" / f"{case}.yaml")]


def render(*args: str) -> list:
    out = helm("template", "chat", str(CHART), "--namespace", "chat", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def write_values(tmp_path, text: str) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module", params=CASES)
def manifests(request):
    return render(*values_args(request.param))


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs):
    """(name, pod spec) of every Deployment and Job."""
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in ("Deployment", "Job")]


def binary_of(deployment) -> str:
    return deployment["spec"]["template"]["spec"]["containers"][0]["command"][0]


def environment(deployment, docs) -> dict:
    """Every variable the container gets: from its ConfigMaps, then env."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(docs, "ConfigMap")}
    names = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        assert ref in config_maps, f"{deployment['metadata']['name']} reads the missing ConfigMap {ref}"
        names.update(config_maps[ref])
    for var in container.get("env", []):
        names[var["name"]] = var.get("value", var.get("valueFrom"))
    return names


def readme_table() -> dict:
    """Variable -> the binaries the README's Configuration table names."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    used_by = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        binaries = {b for b in ("core-svc", "gateway", "archiver") if b in cells[2]}
        if cells[2].startswith("all"):
            binaries = {"core-svc", "gateway", "archiver"}
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)(?:=[^`]*)?`", cells[0]):
            used_by.setdefault(name, set()).update(binaries)
    assert "DATABASE_URL" in used_by and "WS_QUEUE_FRAMES" in used_by, "the README's Configuration table moved"
    return used_by


# --- every container -------------------------------------------------------


def test_every_deployment_container_has_readiness_and_liveness_probes(manifests):
    for deployment in of_kind(manifests, "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            where = f"{deployment['metadata']['name']}/{c['name']}"
            assert "readinessProbe" in c and "livenessProbe" in c, where
            assert "exec" not in c["readinessProbe"] and "exec" not in c["livenessProbe"], where


def test_probes_are_the_binaries_own_health_endpoints(manifests):
    for deployment in of_kind(manifests, "Deployment"):
        c = deployment["spec"]["template"]["spec"]["containers"][0]
        binary = binary_of(deployment)
        if binary == "core-svc":
            assert c["readinessProbe"]["grpc"]["port"] == port_of(c, "grpc")
            assert c["startupProbe"]["grpc"]["port"] == port_of(c, "grpc")
        else:
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, binary
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, binary


def test_every_container_has_resources_and_a_restricted_security_context(manifests):
    pods = pod_specs(manifests)
    assert {name.rsplit("-", 1)[-1] for name, _ in pods} >= {"svc", "gateway", "archiver"}
    for name, spec in pods:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{c['name']}"
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
            assert c["resources"]["limits"]["memory"], where
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not sc.get("privileged"), where


def test_pods_stop_after_a_sleep_with_no_shell_and_time_to_drain(manifests):
    for deployment in of_kind(manifests, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        c = spec["containers"][0]
        pre_stop = c.get("lifecycle", {}).get("preStop")
        if pre_stop:
            assert list(pre_stop) == ["sleep"], "the image has no shell for an exec hook"
            assert spec["terminationGracePeriodSeconds"] > pre_stop["sleep"]["seconds"]
        if binary_of(deployment) == "gateway":
            assert pre_stop and pre_stop["sleep"]["seconds"] >= 5
            assert spec["terminationGracePeriodSeconds"] >= pre_stop["sleep"]["seconds"] + 30


def test_pods_roll_when_their_configuration_changes(manifests):
    for deployment in of_kind(manifests, "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])


def test_a_settings_change_rolls_only_its_component():
    def checksums(*args):
        return {binary_of(d): d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in of_kind(render("--set", "auth.jwtSecret=" + "j" * 40, *args), "Deployment")}
    before = checksums()
    after = checksums("--set", "gateway.config.wsQueueFrames=1024")
    assert before["gateway"] != after["gateway"]
    assert before["core-svc"] == after["core-svc"] and before["archiver"] == after["archiver"]


def test_pods_spread_over_zones_and_nodes_by_default():
    for deployment in of_kind(render(), "Deployment"):
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = {s["topologyKey"] for s in spread}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert all(s["labelSelector"]["matchLabels"] == selector for s in spread)


# --- environment --------------------------------------------------------------


def test_each_binary_gets_every_variable_it_needs(manifests):
    deployments = of_kind(manifests, "Deployment")
    assert sorted(binary_of(d) for d in deployments) == ["archiver", "core-svc", "gateway"]
    for deployment in deployments:
        binary = binary_of(deployment)
        missing = REQUIRED[binary] - set(environment(deployment, manifests))
        assert not missing, f"{binary} lacks {sorted(missing)}"


def test_each_variable_set_is_one_its_binary_reads_by_the_readme(manifests):
    used_by = readme_table()
    for deployment in of_kind(manifests, "Deployment"):
        binary = binary_of(deployment)
        for name in environment(deployment, manifests):
            if ANY_BINARY.match(name) or name in NOT_IN_README[binary]:
                continue
            assert binary in used_by.get(name, set()), f"{binary} is given {name}, which the README names for {used_by.get(name)}"


def test_listen_addresses_are_the_container_ports(manifests):
    for deployment in of_kind(manifests, "Deployment"):
        env = environment(deployment, manifests)
        c = deployment["spec"]["template"]["spec"]["containers"][0]
        if binary_of(deployment) == "core-svc":
            assert env["GRPC_LISTEN_ADDR"] == f"0.0.0.0:{port_of(c, 'grpc')}"
            assert env["METRICS_LISTEN_ADDR"] == f"0.0.0.0:{port_of(c, 'metrics')}"
        elif binary_of(deployment) == "archiver":
            assert env["ARCHIVER_LISTEN_ADDR"] == f"0.0.0.0:{port_of(c, 'http')}"
        else:
            assert env["HTTP_LISTEN_ADDR"] == f"0.0.0.0:{port_of(c, 'http')}"


def test_interpolated_variables_are_defined_before_their_use(manifests):
    for name, spec in pod_specs(manifests):
        defined = set()
        for var in spec["containers"][0].get("env", []):
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", var.get("value", "")):
                assert ref in defined, f"{name}: {var['name']} uses $({ref}) before it is defined"
            defined.add(var["name"])


def test_the_gateway_reaches_core_svc_by_a_service_of_the_release(manifests):
    services = {s["metadata"]["name"]: s for s in of_kind(manifests, "Service")}
    gateway = next(d for d in of_kind(manifests, "Deployment") if binary_of(d) == "gateway")
    address = environment(gateway, manifests)["CORE_GRPC_ADDR"]
    match = re.fullmatch(r"http://([a-z0-9-]+)\.chat\.svc\.cluster\.local:(\d+)", address)
    assert match, address
    service = services[match.group(1)]
    assert int(match.group(2)) in [p["port"] for p in service["spec"]["ports"]]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "core-svc"


def test_core_svc_has_a_headless_service_beside_a_cluster_ip_one(manifests):
    core = [s for s in of_kind(manifests, "Service") if s["spec"]["selector"]["app.kubernetes.io/component"] == "core-svc"]
    assert sorted(s["spec"].get("clusterIP", "") for s in core) == ["", "None"]


def test_passwords_reach_the_urls_through_the_secrets(tmp_path):
    values = write_values(tmp_path, "postgres: {password: pg-pass}\nredis: {password: redis-pass}\n"
                          "nats: {user: chat, password: nats-pass}\n")
    docs = render("-f", values)
    core = next(d for d in of_kind(docs, "Deployment") if binary_of(d) == "core-svc")
    env = environment(core, docs)
    assert env["DATABASE_URL"] == "postgres://chat:$(POSTGRES_PASSWORD)@postgres:5432/chat?sslmode=prefer"
    assert env["REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
    assert env["NATS_URL"] == "nats://chat:$(NATS_PASSWORD)@nats:4222"
    secret = of_kind(docs, "Secret")
    for name, key in [("POSTGRES_PASSWORD", "POSTGRES_PASSWORD"), ("REDIS_PASSWORD", "REDIS_PASSWORD")]:
        ref = env[name]["secretKeyRef"]
        owner = next(s for s in secret if s["metadata"]["name"] == ref["name"])
        assert key == ref["key"] and key in owner["data"]


def test_large_numbers_reach_the_binaries_as_integers(tmp_path):
    # Helm reads numbers as floats, and prints 2592000 as 2.592e+06 unless
    # the chart converts them.
    values = write_values(tmp_path, "auth: {tokenLifetimeSeconds: 2592000}\n"
                          "coreSvc: {config: {passwordHashWaitMs: 1000000, subscribeQueueMessages: 4000000}}\n"
                          "kafka: {strimziTopic: {enabled: true, retentionMs: 604800000}}\n")
    docs = render("-f", values)
    core = next(c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-core-svc"))
    assert core["data"]["TOKEN_LIFETIME_SECS"] == "2592000"
    assert core["data"]["PASSWORD_HASH_WAIT_MS"] == "1000000"
    assert core["data"]["SUBSCRIBE_QUEUE_MESSAGES"] == "4000000"
    for doc in docs:
        assert not re.search(r"\b\d(\.\d+)?e\+\d+\b", yaml.safe_dump(doc)), doc["metadata"]["name"]
    (topic,) = of_kind(docs, "KafkaTopic")
    assert topic["spec"]["config"]["retention.ms"] == 604800000


# --- secrets ------------------------------------------------------------------

SECRETS = {
    "auth.jwtSecret": "jwt-marker-0123456789-0123456789-0123456789",
    "postgres.password": "pg-marker-secret",
    "redis.password": "redis-marker-secret",
    "nats.password": "nats-marker-secret",
}


def test_no_secret_value_in_a_config_map_or_in_plain_env():
    args = [a for key, value in SECRETS.items() for a in ("--set", f"{key}={value}")]
    docs = render(*args, "--set", "nats.user=chat")
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for value in SECRETS.values():
            assert value not in text, f"{doc['kind']}/{doc['metadata']['name']} holds a secret"
            assert base64.b64encode(value.encode()).decode() not in text
    for config_map in of_kind(docs, "ConfigMap"):
        for key in config_map["data"]:
            assert not re.search("SECRET|_PASSWORD$|TOKEN$", key), key
    stored = {base64.b64decode(v).decode() for s in of_kind(docs, "Secret") for v in s["data"].values()}
    assert set(SECRETS.values()) <= stored


def test_existing_secrets_leave_no_password_in_the_chart():
    docs = render(*values_args("ha-values"))
    assert not [s for s in of_kind(docs, "Secret")], "every secret is the operator's own"
    core = next(d for d in of_kind(docs, "Deployment") if binary_of(d) == "core-svc")
    env = environment(core, docs)
    assert env["JWT_SECRET"]["secretKeyRef"] == {"name": "chat-jwt", "key": "secret"}
    assert env["POSTGRES_PASSWORD"]["secretKeyRef"] == {"name": "chat-postgres", "key": "password"}


def test_the_jwt_secret_is_looked_up_before_one_is_generated():
    # The Secret the chart writes is looked up by its own name and key
    # before a new value is made (the stand-in API below answers it).
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    jwt = helpers.split('{{- define "chat.jwtSecretB64" -}}', 1)[1].split("{{- end }}\n{{- end }}\n{{- end }}", 1)[0]
    assert 'lookup "v1" "Secret" .Release.Namespace (include "chat.secretName" .)' in jwt
    assert 'index $existing.data "JWT_SECRET"' in jwt
    assert jwt.index("lookup") < jwt.index("randAlphaNum")
    secret_template = (CHART / "templates" / "secret.yaml").read_text()
    assert 'name: {{ include "chat.secretName" . }}' in secret_template
    assert '"JWT_SECRET" (include "chat.jwtSecretB64" .)' in secret_template


def jwt_of(docs) -> str:
    return base64.b64decode(of_kind(docs, "Secret")[0]["data"]["JWT_SECRET"]).decode()


def test_a_given_jwt_secret_renders_the_same_every_time():
    args = ("--set", "auth.jwtSecret=" + SECRETS["auth.jwtSecret"])
    first, second = render(*args), render(*args)
    assert jwt_of(first) == jwt_of(second) == SECRETS["auth.jwtSecret"]
    assert [d["spec"]["template"]["metadata"]["annotations"] for d in of_kind(first, "Deployment")] == \
        [d["spec"]["template"]["metadata"]["annotations"] for d in of_kind(second, "Deployment")]


# A stand-in for the Kubernetes API: discovery, and GET of the release's
# Secret, as `helm template --dry-run=server` asks them. Read-only: every
# other GET is 404, and nothing can be written.
API_RESOURCES = {
    "v1": [("secrets", "Secret"), ("configmaps", "ConfigMap"), ("services", "Service"),
           ("serviceaccounts", "ServiceAccount"), ("pods", "Pod")],
    "apps/v1": [("deployments", "Deployment")],
    "batch/v1": [("jobs", "Job")],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    "networking.k8s.io/v1": [("ingresses", "Ingress"), ("networkpolicies", "NetworkPolicy")],
}


def api_answer(path: str, secrets: dict):
    path = path.split("?", 1)[0]
    if path == "/version":
        return {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
    if path == "/apis":
        groups = [gv.split("/") for gv in API_RESOURCES if "/" in gv]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
             "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups]}
    group_version = path.removeprefix("/api/").removeprefix("/apis/")
    if group_version in API_RESOURCES:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": [
            {"name": name, "singularName": "", "namespaced": True, "kind": kind,
             "verbs": ["get", "list", "create", "update", "patch", "delete"]}
            for name, kind in API_RESOURCES[group_version]]}
    if path == "/api/v1/namespaces/chat/secrets":
        return {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}
    name = path.removeprefix("/api/v1/namespaces/chat/secrets/")
    return secrets.get(name)


@contextlib.contextmanager
def kubernetes_api(tmp_path, secrets: dict):
    """A kubeconfig for the stand-in API, and the paths it was asked for."""
    asked = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path.split("?", 1)[0])
            body = api_answer(self.path, secrets)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body or {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                 "reason": "NotFound", "code": 404}).encode())

        def do_POST(self):
            asked.append(f"{self.command} {self.path}")
            self.send_response(405)
            self.end_headers()

        do_PUT = do_PATCH = do_DELETE = do_POST

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "stand-in", "user": {"token": "none"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in", "namespace": "chat"}}],
    }))
    try:
        yield str(kubeconfig), asked
    finally:
        server.shutdown()
        server.server_close()


def release_secret(jwt: str) -> dict:
    """The chart's Secret as an earlier install left it."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "chat", "namespace": "chat",
                         "labels": {"app.kubernetes.io/managed-by": "Helm"},
                         "annotations": {"meta.helm.sh/release-name": "chat", "meta.helm.sh/release-namespace": "chat"}},
            "data": {"JWT_SECRET": base64.b64encode(jwt.encode()).decode()}}


def helms():
    return [h for h in (helm_binary(), os.environ.get("HELM3")) if h]


def render_against(helm_path: str, kubeconfig: str) -> list:
    result = subprocess.run(
        [helm_path, "template", "chat", str(CHART), "--namespace", "chat", "--kubeconfig", kubeconfig,
         "--dry-run=server", "--disable-openapi-validation"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_jwt_secret_of_an_existing_release_is_kept(tmp_path):
    kept = "kept-from-the-first-install-0123456789abcdef"
    with kubernetes_api(tmp_path, {"chat": release_secret(kept)}) as (kubeconfig, asked):
        for helm_path in helms():
            first, second = render_against(helm_path, kubeconfig), render_against(helm_path, kubeconfig)
            assert jwt_of(first) == jwt_of(second) == kept, helm_path
            assert [d["spec"]["template"]["metadata"]["annotations"] for d in of_kind(first, "Deployment")] == \
                [d["spec"]["template"]["metadata"]["annotations"] for d in of_kind(second, "Deployment")]
    assert "/api/v1/namespaces/chat/secrets/chat" in asked
    assert not [a for a in asked if " " in a], f"Helm tried to write: {asked}"


def test_a_first_install_generates_a_jwt_secret(tmp_path):
    with kubernetes_api(tmp_path, {}) as (kubeconfig, asked):
        for helm_path in helms():
            first, second = jwt_of(render_against(helm_path, kubeconfig)), jwt_of(render_against(helm_path, kubeconfig))
            assert len(first) == len(second) == 48 and first != second
    assert "/api/v1/namespaces/chat/secrets/chat" in asked


def test_a_generated_jwt_secret_is_long_and_random_without_a_cluster():
    first, second = jwt_of(render()), jwt_of(render())
    assert len(first) == len(second) == 48 and first != second


# --- ports and Services -------------------------------------------------------


def port_of(container, name) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def selected(selector, docs):
    return [d for d in of_kind(docs, "Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]


def test_every_service_targets_ports_its_pods_open(manifests):
    for service in of_kind(manifests, "Service"):
        deployments = selected(service["spec"]["selector"], manifests)
        assert len(deployments) == 1, service["metadata"]["name"]
        container = deployments[0]["spec"]["template"]["spec"]["containers"][0]
        names = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in names or target in names.values(), f"{service['metadata']['name']}: {target} is not {names}"


def test_probes_use_declared_ports(manifests):
    for deployment in of_kind(manifests, "Deployment"):
        c = deployment["spec"]["template"]["spec"]["containers"][0]
        names = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            handler = next(iter(v for k, v in c[probe].items() if k in ("grpc", "httpGet", "tcpSocket")))
            assert handler["port"] in names or handler["port"] in names.values(), f"{c['name']} {probe}"


def test_pdbs_and_autoscalers_point_at_the_deployments(manifests):
    deployments = {d["metadata"]["name"]: d for d in of_kind(manifests, "Deployment")}
    for pdb in of_kind(manifests, "PodDisruptionBudget"):
        assert len(selected(pdb["spec"]["selector"]["matchLabels"], manifests)) == 1
        assert "minAvailable" not in pdb["spec"], "a single replica must not block a drain"
    for hpa in of_kind(manifests, "HorizontalPodAutoscaler"):
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], "the autoscaler owns the replica count"
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])


def test_the_gateway_may_scale_on_open_sockets():
    hpa = next(h for h in of_kind(render(*values_args("everything-values")), "HorizontalPodAutoscaler")
               if h["metadata"]["name"].endswith("-gateway"))
    pods = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods and pods[0]["metric"]["name"] == "chat_ws_connections"


def test_the_ingress_and_route_reach_the_gateway_with_websocket_timeouts():
    docs = render(*values_args("everything-values"))
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    (ingress,) = of_kind(docs, "Ingress")
    assert int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["port"]["name"] in [p["name"] for p in services[backend["name"]]["spec"]["ports"]]
    (route,) = of_kind(docs, "HTTPRoute")
    for rule in route["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            assert ref["port"] in [p["port"] for p in services[ref["name"]]["spec"]["ports"]]


def test_network_policies_leave_no_open_door_when_peers_are_named():
    docs = render(*values_args("everything-values"))
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"chat-core-svc", "chat-gateway", "chat-archiver", "chat-migrations"}
    for policy in policies.values():
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule open to anyone"
    # Without metricsFrom, the gateway's public port is the only rule.
    docs = render("--set", "networkPolicy.enabled=true",
                  "--set", "networkPolicy.gatewayFrom[0].namespaceSelector.matchLabels.team=edge")
    (gateway,) = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "chat-gateway"]
    assert all(rule.get("from") for rule in gateway["spec"]["ingress"])


# --- alerts and dashboards ----------------------------------------------------

ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts-test.yaml"
DASHBOARDS = CHART / "files" / "dashboards"
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")


def test_monitoring_resources_are_off_by_default():
    defaults = render()
    assert not of_kind(defaults, "PrometheusRule") and not of_kind(defaults, "ServiceMonitor")
    assert "chat-dashboards" not in [c["metadata"]["name"] for c in of_kind(defaults, "ConfigMap")]


def test_the_prometheus_rule_carries_the_rules_file_as_it_is():
    docs = render(*values_args("everything-values"))
    (rule,) = of_kind(docs, "PrometheusRule")
    # No schema is bundled for the custom resource: its shape by hand.
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {"groups"}
    assert rule["metadata"]["name"] == "chat" and rule["metadata"]["namespace"] == "chat"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "chat"
    groups = rule["spec"]["groups"]
    assert groups == yaml.safe_load(ALERTS.read_text())["groups"]
    # Templates reach Prometheus untouched (the chart does not render them).
    assert "{{ $labels.job }}" in json.dumps(groups)
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names))
    alerts = [r for g in groups for r in g["rules"]]
    for alert in alerts:
        assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}, alert
        assert re.fullmatch(r"Chat[A-Z][A-Za-z0-9]+", alert["alert"])
        assert isinstance(alert["expr"], str) and alert["expr"].strip()
        assert DURATION.match(alert["for"]), alert["for"]
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert set(alert["annotations"]) == {"summary", "description"}, alert["alert"]
        assert "Check" in alert["annotations"]["description"], f"{alert['alert']}: no hint of what to check"
    expected = {"ChatArchiverLagging", "ChatHttp5xxRate", "ChatGrpcUnavailableRate", "ChatSendsFailing",
                "ChatSlowClientDisconnects", "ChatNatsDisconnected", "ChatKafkaUnreachable"}
    assert expected <= {a["alert"] for a in alerts}


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not():
    # The tests themselves run in scripts/check-observability (promtool test rules).
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert [str((ALERT_TESTS.parent / f).resolve()) for f in tests["rule_files"]] == [str(ALERTS)]
    firing, silent = set(), set()
    for test in tests["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown staying silent"
    assert (firing | silent) - alerts == set(), "tests of alerts that do not exist"


def test_the_dashboards_config_map_carries_the_dashboard_files_for_the_sidecar():
    docs = render(*values_args("everything-values"))
    (dashboards,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == "chat-dashboards"]
    assert dashboards["metadata"]["namespace"] == "chat"
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["labels"]["app.kubernetes.io/part-of"] == "chat"
    assert dashboards["metadata"]["annotations"] == {"grafana_folder": "chat"}
    files = {p.name: p.read_text() for p in sorted(DASHBOARDS.glob("*.json"))}
    assert files and dashboards["data"] == files
    for name, text in dashboards["data"].items():
        assert json.loads(text)["uid"], name
    # A ConfigMap holds at most 1 MiB.
    assert len(json.dumps(dashboards["data"]).encode()) < 1024 * 1024
    # The sidecar's label is a value: another sidecar setting is honoured.
    docs = render("--set", "metrics.grafanaDashboards.enabled=true",
                  "--set-json", 'metrics.grafanaDashboards.labels={"dashboards":"chat"}')
    (dashboards,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == "chat-dashboards"]
    assert dashboards["metadata"]["labels"]["dashboards"] == "chat"
    assert "annotations" not in dashboards["metadata"]


# --- migrations ---------------------------------------------------------------


def test_migrations_run_as_a_hook_before_the_pods_with_what_exists_then(manifests):
    jobs = of_kind(manifests, "Job")
    assert len(jobs) == 1
    job = jobs[0]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["core-svc", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    env = {v["name"]: v for v in c["env"]}
    assert "DATABASE_URL" in env
    # A pre-install hook runs before the release's own resources exist: it
    # may use only other hooks and what the operator made.
    hooks = {d["metadata"]["name"] for d in manifests if "helm.sh/hook" in d["metadata"].get("annotations", {})}
    own = {d["metadata"]["name"] for d in manifests if d["kind"] in ("Secret", "ConfigMap", "ServiceAccount")} - hooks
    refs = [v["valueFrom"]["secretKeyRef"]["name"] for v in c["env"] if "secretKeyRef" in v.get("valueFrom", {})]
    assert not set(refs) & own, f"the Job needs {set(refs) & own}, made only after it"
    assert job["spec"]["template"]["spec"].get("serviceAccountName") not in own
    assert not c.get("envFrom")
    for name in set(refs) & hooks:
        secret = next(d for d in manifests if d["metadata"]["name"] == name)
        assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])


def test_migrations_bypass_a_transaction_pooler_when_told():
    docs = render(*values_args("ha-values"))
    (job,) = of_kind(docs, "Job")
    core = next(d for d in of_kind(docs, "Deployment") if binary_of(d) == "core-svc")
    job_url = {v["name"]: v for v in job["spec"]["template"]["spec"]["containers"][0]["env"]}["DATABASE_URL"]["value"]
    assert "@chat-postgres-rw.db.svc:5432/" in job_url
    assert "@chat-pooler.db.svc:6432/" in environment(core, docs)["DATABASE_URL"]


# --- values.schema.json -------------------------------------------------------


@pytest.mark.parametrize(
    "values, words",
    [
        ("gateway:\n  replicas: three\n", ["replicas"]),
        ("coreSvc:\n  resources:\n    requests:\n      cpus: 1\n", ["cpus"]),
        ("ingress:\n  enabld: true\n", ["enabld"]),
        ("extra: 1\n", ["extra"]),
        ("kafka:\n  brokers: kafka:9092\n", ["brokers"]),
        ("postgres:\n  sslMode: on\n", ["sslMode"]),
    ],
)
def test_values_schema_refuses_a_bad_values_file(tmp_path, values, words):
    result = helm("template", "chat", str(CHART), "-f", write_values(tmp_path, values), check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert "schema" in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_values_schema_forbids_unknown_keys_everywhere():
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert not open_objects, open_objects
    assert schema["additionalProperties"] is False


def test_every_default_value_is_described_by_the_schema():
    # The schema accepts the defaults (helm template would fail) and names
    # every key of values.yaml (no key only the defaults know of).
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node):
        return schema["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    def walk(value, node, path):
        node = resolve(node)
        if isinstance(value, dict) and "properties" in node:
            for key, inner in value.items():
                assert key in node["properties"], f"{path}.{key} is not in the schema"
                walk(inner, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


def test_the_chart_readme_lists_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node, path):
        for key, value in node.items():
            full = f"{path}{key}"
            if isinstance(value, dict) and value and key not in ("resources", "probes"):
                yield from leaves(value, full + ".")
            else:
                yield full

    readme = (CHART / "README.md").read_text()
    listed = set(re.findall(r"^\| `([A-Za-z][\w.]*)` \|", readme, re.M))
    assert listed == set(leaves(values, ""))
