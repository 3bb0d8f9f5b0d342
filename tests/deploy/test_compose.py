"""Checks on docker-compose.yml, the Dockerfile and deploy/ that run without a Docker engine.

First the compose file is validated against the official Compose Specification JSON schema
(vendored in deploy/schemas/compose-spec.json; see deploy/README.md for where it came from). The
schema only knows what Compose accepts, so the rest asserts what an operator relies on: every
container is health-checked and restarted, the services get the settings they read, every topic
exists before anything subscribes, MongoDB runs as a replica set, mounted files exist, Prometheus
scrapes every service, and the image does not run as root.

Uses only pyyaml and jsonschema.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = ROOT / "deploy" / "schemas" / "compose-spec.json"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCE_FILE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARDS_PROVIDER = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "switchboard.yml"
GRAFANA_DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"
PROMETHEUS_RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
ALERTMANAGER_FILE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

# The vendored schema, byte for byte as shipped in npm `dclint@3.1.0` (schemas/compose.schema.json).
# If you update the schema, update this digest and the note in deploy/README.md together.
SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"

# The Switchboard services and the port each one serves HTTP (API, health, /metrics) on.
APP_SERVICES = {"intake": 8001, "routing": 8002, "sla": 8003, "notify": 8004, "insights": 8005}

# Containers that run until stopped; kafka-init is a one-shot job and is checked on its own.
LONG_RUNNING = {"kafka", "mongodb", "mailpit", "prometheus", "alertmanager", "grafana", *APP_SERVICES}
ONE_SHOT = {"kafka-init"}

CONTRACT_TOPICS = (
    "support.inbound.v1",
    "support.tickets.v1",
    "support.routing.v1",
    "support.sla.v1",
    "support.agents.v1",
    "support.notifications.v1",
)

# Settings every service reads (shared/settings.py) and the value it must get in compose.
# SWITCHBOARD_API_KEYS must use `${VAR:?message}`, so compose refuses to start without it.
REQUIRED_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "MONGODB_URL": "mongodb://mongodb:27017/?replicaSet=rs0",
    "HTTP_HOST": "0.0.0.0",
    "LOG_LEVEL": "INFO",
}
# Settings only one service reads, beyond ServiceSettings.
SERVICE_ONLY_ENV = {
    "intake": {
        "CSAT_SIGNING_KEY": "${CSAT_SIGNING_KEY:-}",
        "INBOUND_EMAIL_SIGNING_KEY": "${INBOUND_EMAIL_SIGNING_KEY:-}",
    },
    "notify": {
        "SMTP_URL": "smtp://mailpit:1025",
        "INTAKE_PUBLIC_URL": "${INTAKE_PUBLIC_URL:-http://localhost:8001}",
        "CSAT_SIGNING_KEY": "${CSAT_SIGNING_KEY:-}",
        "WEBHOOK_SIGNING_KEY": "${WEBHOOK_SIGNING_KEY:-}",
    },
}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    # safe_load resolves anchors and `<<` merge keys the same way Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    """A service's environment as a dict, whichever of the two Compose syntaxes it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_text(value: object) -> str:
    """A command, entrypoint or healthcheck test as one string, whichever form it is written in."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(part) for part in value)
    return str(value)


def depends_on(service: dict) -> dict[str, str]:
    """depends_on as {service: condition}; the short list form means `service_started`."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published_ports(service: dict) -> set[tuple[str, str]]:
    """(published, target) pairs from the short ("8001:8001") and long port syntaxes."""
    pairs = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            pairs.add((str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        pairs.add((parts[-2] if len(parts) > 1 else "", parts[-1]))
    return pairs


def bind_sources(service: dict) -> list[str]:
    """Host paths of a service's bind mounts (short syntax `./x:/y[:ro]`, or long syntax)."""
    sources = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                sources.append(volume["source"])
        else:
            source = str(volume).split(":")[0]
            if source.startswith((".", "/", "~")):
                sources.append(source)
    return sources


def named_volume_sources(service: dict) -> list[str]:
    sources = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "volume" and volume.get("source"):
                sources.append(volume["source"])
        else:
            parts = str(volume).split(":")
            if len(parts) > 1 and not parts[0].startswith((".", "/", "~")):
                sources.append(parts[0])
    return sources


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


# ----------------------------------------------------------------------------------------------
# The official schema
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    assert SCHEMA_FILE.is_file(), f"vendored Compose schema {SCHEMA_FILE} is missing"
    schema = json.loads(SCHEMA_FILE.read_text())
    # The schema declares draft-07 as "https://json-schema.org/draft-07/schema", a spelling of the
    # metaschema URI that jsonschema does not map to a draft by itself, so name the draft here.
    assert "draft-07" in schema.get("$schema", ""), f"the vendored schema is not draft-07: {schema.get('$schema')!r}"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_vendored_schema_is_the_unmodified_compose_specification() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, (
        f"{SCHEMA_FILE.relative_to(ROOT)} differs from the vendored Compose Specification schema "
        f"(sha256 {digest}, expected {SCHEMA_SHA256}); if it was updated on purpose, update "
        "SCHEMA_SHA256 here and its source note in deploy/README.md"
    )
    assert json.loads(SCHEMA_FILE.read_text())["title"] == "Compose Specification"


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict, compose_validator: jsonschema.protocols.Validator
) -> None:
    errors = sorted(compose_validator.iter_errors(compose), key=lambda error: list(error.absolute_path))
    problems = [
        f"  at {'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in errors
    ]
    assert not problems, "docker-compose.yml breaks the Compose Specification:\n" + "\n".join(problems)


def test_schema_check_is_not_vacuous(compose: dict, compose_validator: jsonschema.protocols.Validator) -> None:
    """The same validator must reject a typo a real operator could make."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["intake"]["helthcheck"] = broken["services"]["intake"].pop("healthcheck")
    assert not compose_validator.is_valid(broken), (
        "the vendored schema accepted an unknown service key `helthcheck`: it is not checking services"
    )


# ----------------------------------------------------------------------------------------------
# Every container
# ----------------------------------------------------------------------------------------------


def test_the_expected_services_are_defined(services: dict) -> None:
    missing = (LONG_RUNNING | ONE_SHOT) - set(services)
    assert not missing, f"docker-compose.yml has no service(s) {sorted(missing)}"


def test_every_service_has_a_restart_policy(services: dict) -> None:
    for name, service in services.items():
        assert "restart" in service, f"service {name!r} has no restart policy"
        if name in ONE_SHOT:
            assert service["restart"] in ("no", "on-failure"), (
                f"one-shot service {name!r} has restart {service['restart']!r}: it would be run again "
                "after it succeeds; use 'no'"
            )
        else:
            assert service["restart"] in ("unless-stopped", "always"), (
                f"service {name!r} has restart {service['restart']!r}: a crashed container would stay "
                "down; use 'unless-stopped'"
            )


def test_every_long_running_service_has_a_healthcheck(services: dict) -> None:
    for name in sorted(LONG_RUNNING):
        healthcheck = services[name].get("healthcheck")
        assert healthcheck, f"service {name!r} has no healthcheck"
        assert not healthcheck.get("disable"), f"service {name!r} disables its healthcheck"
        assert command_text(healthcheck.get("test")).strip(), f"service {name!r} has a healthcheck with no test"


def test_named_volumes_are_declared(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source in named_volume_sources(service):
            assert source in declared, (
                f"service {name!r} mounts volume {source!r}, which is not declared under top-level volumes:"
            )


def test_every_file_mounted_from_the_repository_exists(services: dict) -> None:
    mounted = []
    for name, service in services.items():
        for source in bind_sources(service):
            path = (ROOT / source).resolve()
            assert path.exists(), f"service {name!r} mounts {source}, which does not exist in the repository"
            mounted.append(path)
    # The observability config must come from deploy/, not from defaults baked into the images.
    assert PROMETHEUS_FILE.resolve() in mounted, f"{PROMETHEUS_FILE.relative_to(ROOT)} is not mounted into prometheus"
    assert GRAFANA_DATASOURCE_FILE.resolve() in mounted, (
        f"{GRAFANA_DATASOURCE_FILE.relative_to(ROOT)} is not mounted into grafana"
    )


# ----------------------------------------------------------------------------------------------
# The four Switchboard services
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,port", sorted(APP_SERVICES.items()))
def test_service_runs_the_shared_image_with_its_own_command(services: dict, name: str, port: int) -> None:
    service = services[name]
    build = service.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    assert context in (".", "./"), f"service {name!r} is not built from the repository's Dockerfile (build: {build!r})"
    expected = ["python", "-m", f"services.{name}"]
    assert service.get("command") == expected, (
        f"service {name!r} runs {service.get('command')!r}, expected {expected!r}"
    )


@pytest.mark.parametrize("name,port", sorted(APP_SERVICES.items()))
def test_service_environment_names_its_settings(services: dict, name: str, port: int) -> None:
    env = environment(services[name])
    expected = {**REQUIRED_ENV, "HTTP_PORT": str(port), **SERVICE_ONLY_ENV.get(name, {})}
    for key, value in expected.items():
        assert key in env, f"service {name!r} does not set {key}"
        assert env[key] == value, f"service {name!r} sets {key}={env[key]!r}, expected {value!r}"
    api_keys = env.get("SWITCHBOARD_API_KEYS", "")
    assert re.fullmatch(r"\$\{SWITCHBOARD_API_KEYS:\?[^}]*\}", api_keys), (
        f"service {name!r} sets SWITCHBOARD_API_KEYS={api_keys!r}: it must be required from the "
        "operator's environment as ${SWITCHBOARD_API_KEYS:?message}, never a default or a literal key"
    )


@pytest.mark.parametrize("name,port", sorted(APP_SERVICES.items()))
def test_service_environment_has_no_names_the_settings_ignore(services: dict, name: str, port: int) -> None:
    """pydantic-settings ignores unknown variables, so a typo (MONGO_URL) would silently fall back
    to the embedded default. Every name set here must be one the settings read."""
    from shared.settings import ServiceSettings

    prefix = ServiceSettings.model_config.get("env_prefix", "")
    known = {f"{prefix}{field}".upper() for field in ServiceSettings.model_fields}
    known |= set(SERVICE_ONLY_ENV.get(name, {}))
    unknown = set(environment(services[name])) - known
    assert not unknown, f"service {name!r} sets {sorted(unknown)}, which no setting of the service reads"


@pytest.mark.parametrize("name,port", sorted(APP_SERVICES.items()))
def test_service_gets_every_signing_key_it_reads_from_the_operator(services: dict, name: str, port: int) -> None:
    """A signing key left out of compose silently turns its feature off (surveys, inbound email,
    webhooks); a literal one would be public. Each is passed through from the operator's environment."""
    import importlib

    module = importlib.import_module(f"services.{name}.settings")
    settings = next(
        value for value in vars(module).values() if isinstance(value, type) and value.__name__.lower() == f"{name}settings"
    )
    env = environment(services[name])
    for field in settings.model_fields:
        if field.endswith("_signing_key"):
            variable = field.upper()
            assert re.fullmatch(rf"\$\{{{variable}(:-|:\?[^}}]*)\}}", env.get(variable, "")), (
                f"service {name!r} sets {variable}={env.get(variable)!r}: it reads that key, so compose must pass "
                f"it from the operator's environment as ${{{variable}:-}} or ${{{variable}:?message}}"
            )


@pytest.mark.parametrize("name,port", sorted(APP_SERVICES.items()))
def test_service_is_published_and_probed_on_its_port(services: dict, name: str, port: int) -> None:
    service = services[name]
    assert (str(port), str(port)) in published_ports(service), (
        f"service {name!r} does not publish port {port}:{port} (ports: {service.get('ports')!r})"
    )
    probe = command_text((service.get("healthcheck") or {}).get("test"))
    url = f"http://localhost:{port}/health/ready"
    assert url in probe, f"service {name!r} healthcheck does not probe {url}: {probe!r}"


@pytest.mark.parametrize("name,port", sorted(APP_SERVICES.items()))
def test_service_starts_after_topics_and_replica_set(services: dict, name: str, port: int) -> None:
    deps = depends_on(services[name])
    assert deps.get("kafka-init") == "service_completed_successfully", (
        f"service {name!r} must wait for kafka-init to complete successfully (topics exist), got "
        f"{deps.get('kafka-init')!r}"
    )
    assert deps.get("mongodb") == "service_healthy", (
        f"service {name!r} must wait for mongodb to be healthy (a primary exists), got {deps.get('mongodb')!r}"
    )


def test_service_ports_are_distinct(services: dict) -> None:
    ports = {name: environment(services[name]).get("HTTP_PORT") for name in APP_SERVICES}
    assert len(set(ports.values())) == len(ports), f"services share an HTTP_PORT: {ports}"


# ----------------------------------------------------------------------------------------------
# Kafka and topics
# ----------------------------------------------------------------------------------------------


def test_kafka_is_a_single_kraft_node_without_topic_auto_creation(services: dict) -> None:
    env = environment(services["kafka"])
    assert set(env.get("KAFKA_PROCESS_ROLES", "").split(",")) == {"broker", "controller"}, (
        f"kafka must run KRaft as broker and controller, KAFKA_PROCESS_ROLES={env.get('KAFKA_PROCESS_ROLES')!r}"
    )
    assert "PLAINTEXT://kafka:9092" in env.get("KAFKA_ADVERTISED_LISTENERS", ""), (
        "kafka must advertise PLAINTEXT://kafka:9092, the address the services bootstrap from"
    )
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", (
        "kafka must not auto-create topics: kafka-init creates them with the right partition count"
    )
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env.get(key) == "1", f"single-broker kafka needs {key}=1, got {env.get(key)!r}"
    assert "kafka-broker-api-versions.sh" in command_text((services["kafka"].get("healthcheck") or {}).get("test")), (
        "kafka's healthcheck must ask the broker itself (kafka-broker-api-versions.sh)"
    )


def test_kafka_init_creates_every_topic_and_its_dead_letter_topic(services: dict) -> None:
    init = services["kafka-init"]
    assert init.get("image") == services["kafka"].get("image"), "kafka-init must use the broker's image (its CLI tools)"
    assert depends_on(init).get("kafka") == "service_healthy", "kafka-init must wait for kafka to be healthy"
    script = " ".join([command_text(init.get("entrypoint")), command_text(init.get("command"))])
    for flag in ("kafka-topics.sh", "--create", "--if-not-exists", "--partitions 6", "--replication-factor 1"):
        assert flag in " ".join(script.split()), f"kafka-init's command does not contain {flag!r}"
    # Topic names may be written in the script or in its environment; compare whole names, since
    # support.tickets.v1 is a prefix of support.tickets.v1.dlq.
    text = script + " " + " ".join(environment(init).values())
    named = set(re.findall(r"[A-Za-z0-9._-]+", text))
    expected = {topic for base in CONTRACT_TOPICS for topic in (base, f"{base}.dlq")}
    missing = expected - named
    assert not missing, f"kafka-init does not create topic(s) {sorted(missing)}"


def test_kafka_init_covers_the_topics_the_code_uses(services: dict) -> None:
    """Auto-creation is off, so a topic added to shared/topics.py must be added to kafka-init too."""
    from shared import topics

    init = services["kafka-init"]
    text = " ".join([command_text(init.get("command")), *environment(init).values()])
    named = set(re.findall(r"[A-Za-z0-9._-]+", text))
    in_code = set(topics.ALL) | {topics.dead_letter(topic) for topic in topics.ALL}
    missing = in_code - named
    assert not missing, f"shared/topics.py uses topic(s) {sorted(missing)} that kafka-init does not create"


# ----------------------------------------------------------------------------------------------
# MongoDB
# ----------------------------------------------------------------------------------------------


def test_mongodb_runs_a_replica_set_the_services_connect_to(services: dict) -> None:
    mongodb = services["mongodb"]
    args = mongodb.get("command")
    args = shlex.split(args) if isinstance(args, str) else list(args or [])
    assert "--replSet" in args and args.index("--replSet") + 1 < len(args), (
        f"mongodb must run with --replSet <name> (transactions need a replica set), command: {args!r}"
    )
    replica_set = args[args.index("--replSet") + 1]
    assert "--bind_ip_all" in args, "mongodb must listen beyond localhost (--bind_ip_all) for the services to reach it"
    for name in APP_SERVICES:
        url = environment(services[name])["MONGODB_URL"]
        assert f"replicaSet={replica_set}" in url, (
            f"service {name!r} connects with {url!r}, which does not name replica set {replica_set!r}"
        )
    probe = command_text((mongodb.get("healthcheck") or {}).get("test"))
    assert "rs.initiate" in probe, "mongodb's healthcheck must initiate the replica set on first start"
    assert f"'{replica_set}'" in probe or f'"{replica_set}"' in probe, (
        f"mongodb's healthcheck initiates a replica set other than {replica_set!r}"
    )
    assert "/data/db" in " ".join(str(v) for v in mongodb.get("volumes") or []), (
        "mongodb's data directory /data/db is not on a volume: data would be lost with the container"
    )


# ----------------------------------------------------------------------------------------------
# Observability
# ----------------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    assert config.get("global", {}).get("scrape_interval") == "15s", "global scrape_interval should be 15s"
    jobs = {job["job_name"]: job for job in config.get("scrape_configs") or []}
    for name, port in APP_SERVICES.items():
        job = jobs.get(f"switchboard-{name}")
        assert job, f"{PROMETHEUS_FILE.relative_to(ROOT)} has no job switchboard-{name}"
        assert job.get("metrics_path", "/metrics") == "/metrics", (
            f"job switchboard-{name} scrapes {job.get('metrics_path')!r}, the services serve /metrics"
        )
        targets = {target for group in job.get("static_configs") or [] for target in group.get("targets") or []}
        assert f"{name}:{port}" in targets, f"job switchboard-{name} does not scrape {name}:{port} (targets: {targets})"
    assert "prometheus" in jobs, "Prometheus should scrape itself (job 'prometheus')"


def test_grafana_is_provisioned_with_the_prometheus_datasource(services: dict) -> None:
    datasources = yaml.safe_load(GRAFANA_DATASOURCE_FILE.read_text()).get("datasources") or []
    prometheus = [ds for ds in datasources if ds.get("type") == "prometheus"]
    assert prometheus, f"{GRAFANA_DATASOURCE_FILE.relative_to(ROOT)} provisions no Prometheus datasource"
    assert prometheus[0].get("url") == "http://prometheus:9090", (
        f"the Prometheus datasource points at {prometheus[0].get('url')!r}, not the compose service prometheus:9090"
    )
    env = environment(services["grafana"])
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true", "grafana should allow anonymous viewing"
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer", (
        f"anonymous grafana users get role {env.get('GF_AUTH_ANONYMOUS_ORG_ROLE')!r}, expected 'Viewer' (read-only)"
    )


# ----------------------------------------------------------------------------------------------
# The image
# ----------------------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the Dockerfile has no USER instruction: containers would run as root"
    final_user = users[-1].split(":")[0].strip()
    assert final_user not in ("root", "0"), f"the Dockerfile's last USER is {users[-1]!r}: containers would run as root"
    assert final_user.isdigit(), (
        f"USER {users[-1]!r} is a name: use the numeric uid so Kubernetes runAsNonRoot can verify it"
    )


def test_dockerfile_installs_from_the_lock_and_defaults_to_intake() -> None:
    instructions = dockerfile_instructions()
    bases = [args for keyword, args in instructions if keyword == "FROM"]
    assert bases == ["python:3.11-slim"], f"the image should be built FROM python:3.11-slim, got {bases}"
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs and all("--frozen" in run and "--no-dev" in run for run in syncs), (
        f"every `uv sync` must use --frozen --no-dev, so the image gets exactly uv.lock's runtime packages: {syncs}"
    )
    cmd = [args for keyword, args in instructions if keyword == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["python", "-m", "services.intake"], (
        f"the default CMD should be the exec form ['python', '-m', 'services.intake'], got {cmd}"
    )


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignore_file = ROOT / ".dockerignore"
    assert ignore_file.is_file(), ".dockerignore is missing: .venv and .git would be sent to every build"
    patterns = {line.strip().rstrip("/") for line in ignore_file.read_text().splitlines() if line.strip()}
    for pattern in (".venv", ".git", ".switchboard", "tests"):
        assert pattern in patterns, f".dockerignore does not exclude {pattern}"


# ----------------------------------------------------------------------------------------------
# Alerting and dashboards (the operations issue)
# ----------------------------------------------------------------------------------------------


def bind_mounts(service: dict) -> dict[Path, str]:
    """{resolved host path: container path} of a service's short-syntax bind mounts."""
    mounts = {}
    for volume in service.get("volumes") or []:
        parts = str(volume).split(":")
        if parts[0].startswith((".", "/")):
            mounts[(ROOT / parts[0]).resolve()] = parts[1]
    return mounts


def test_prometheus_loads_the_rules_and_sends_alerts_to_alertmanager(services: dict) -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    mounts = bind_mounts(services["prometheus"])
    config_dir = Path(mounts[PROMETHEUS_FILE.resolve()]).parent
    rules_target = mounts.get(PROMETHEUS_RULES_DIR.resolve())
    assert rules_target, "deploy/prometheus/rules is not mounted into prometheus"
    patterns = [str(config_dir / pattern) for pattern in config.get("rule_files") or []]
    assert any(pattern.startswith(rules_target + "/") for pattern in patterns), (
        f"rule_files {config.get('rule_files')} do not point at the mounted rules directory {rules_target}"
    )
    targets = {
        target
        for manager in (config.get("alerting") or {}).get("alertmanagers") or []
        for group in manager.get("static_configs") or []
        for target in group.get("targets") or []
    }
    assert targets == {"alertmanager:9093"}, f"prometheus sends alerts to {targets}, expected alertmanager:9093"
    assert "9093" in command_text(services["alertmanager"]["healthcheck"]["test"])


def test_alertmanager_routes_every_severity_the_rules_use(services: dict) -> None:
    mounts = bind_mounts(services["alertmanager"])
    target = mounts.get(ALERTMANAGER_FILE.resolve())
    assert target, "deploy/alertmanager/alertmanager.yml is not mounted into alertmanager"
    assert f"--config.file={target}" in command_text(services["alertmanager"].get("command")), (
        "alertmanager is not started with the mounted config"
    )
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    receivers = {receiver["name"] for receiver in config["receivers"]}
    route = config["route"]
    assert route["receiver"] in receivers
    routed = {}
    for child in route.get("routes") or []:
        assert child["receiver"] in receivers, f"route to unknown receiver {child['receiver']!r}"
        for matcher in child.get("matchers") or []:
            match = re.fullmatch(r'severity="(\w+)"', matcher)
            if match:
                routed[match.group(1)] = child["receiver"]
    severities = {
        rule["labels"]["severity"]
        for path in PROMETHEUS_RULES_DIR.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert severities <= set(routed), f"severities {sorted(severities - set(routed))} have no route"
    smarthost = config["global"]["smtp_smarthost"]
    assert smarthost == "mailpit:1025", f"compose alert mail should go to Mailpit, not {smarthost}"


def test_grafana_provisions_the_dashboards(services: dict) -> None:
    mounts = bind_mounts(services["grafana"])
    provider_target = mounts.get(GRAFANA_DASHBOARDS_PROVIDER.resolve())
    assert provider_target and provider_target.startswith("/etc/grafana/provisioning/dashboards/"), (
        "the dashboard provider is not mounted under /etc/grafana/provisioning/dashboards"
    )
    provider = yaml.safe_load(GRAFANA_DASHBOARDS_PROVIDER.read_text())["providers"][0]
    assert mounts.get(GRAFANA_DASHBOARDS_DIR.resolve()) == provider["options"]["path"], (
        f"the provider reads {provider['options']['path']}, but deploy/grafana/dashboards is mounted at "
        f"{mounts.get(GRAFANA_DASHBOARDS_DIR.resolve())}"
    )
    assert sorted(GRAFANA_DASHBOARDS_DIR.glob("*.json")), "deploy/grafana/dashboards has no dashboard"
