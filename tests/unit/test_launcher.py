"""What the launcher starts and what it tells each service, decided from the environment."""

from pathlib import Path

import pytest

from shared.launcher import cli
from shared.launcher.platform import DATABASE_SERVERS, DEV_API_KEY, SERVICES, Platform, Ports
from shared.launcher.servers import free_port

PORTS = Ports(kafka=1, broker_storage=4, mongodb=20, smtp=3, intake=11, routing=12, sla=13, notify=14)


def test_by_default_everything_is_embedded_and_services_point_at_it(tmp_path):
    platform = Platform(tmp_path, PORTS, environ={})

    env = platform.service_environment("routing")

    assert platform.kafka_embedded and platform.mongodb_embedded and platform.smtp_embedded
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    assert env["MONGODB_URL"] == "mongodb://127.0.0.1:21", "routing's database has a server of its own"
    assert [platform.service_environment(service)["MONGODB_URL"] for service in SERVICES] == [
        f"mongodb://127.0.0.1:{port}" for port in range(20, 25)
    ]
    assert env["SMTP_URL"] == "smtp://127.0.0.1:3"
    assert env["HTTP_PORT"] == "12"
    assert env["SWITCHBOARD_API_KEYS"] == DEV_API_KEY == platform.api_key
    assert Path(env["MONGODB_TRANSACTION_LOCK_DIR"]) == tmp_path.resolve() / "mongo"
    assert env["INTAKE_PUBLIC_URL"] == "http://127.0.0.1:11", "survey links reach the intake it started"
    assert Platform(tmp_path, PORTS, environ={"INTAKE_PUBLIC_URL": "https://help.example.com"}).service_environment(
        "notify"
    )["INTAKE_PUBLIC_URL"] == "https://help.example.com"
    assert "OUTBOX_REPLAY_ON_START_SECONDS" not in env, "the embedded broker keeps what it acknowledged"
    assert env["KAFKA_TOPIC_PARTITIONS"] == "1", "on one machine more partitions only cost the broker's storage"
    assert Platform(tmp_path, PORTS, environ={"KAFKA_TOPIC_PARTITIONS": "3"}).service_environment("sla")[
        "KAFKA_TOPIC_PARTITIONS"
    ] == "3"


def test_infrastructure_named_in_the_environment_is_used_instead_of_starting_it(tmp_path):
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "MONGODB_URL": "mongodb://db:27017/?replicaSet=rs0",
        "SMTP_URL": "smtp://mail:25",
        "SWITCHBOARD_API_KEYS": "k1,k2",
    }
    platform = Platform(tmp_path, PORTS, environ=environ)

    env = platform.service_environment("intake")

    assert not (platform.kafka_embedded or platform.mongodb_embedded or platform.smtp_embedded)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["MONGODB_URL"] == "mongodb://db:27017/?replicaSet=rs0"
    assert env["SMTP_URL"] == "smtp://mail:25"
    assert "MONGODB_TRANSACTION_LOCK_DIR" not in env
    assert "KAFKA_TOPIC_PARTITIONS" not in env, "a real cluster's topics keep the settings' default"
    assert platform.api_key == "k1"


def test_signing_keys_are_made_once_per_data_dir_and_shared_by_every_service(tmp_path):
    platform = Platform(tmp_path, PORTS, environ={})

    intake, notify = platform.service_environment("intake"), platform.service_environment("notify")
    again = Platform(tmp_path, PORTS, environ={}).service_environment("intake")

    assert len(intake["CSAT_SIGNING_KEY"]) >= 32
    assert intake["CSAT_SIGNING_KEY"] == notify["CSAT_SIGNING_KEY"] == again["CSAT_SIGNING_KEY"]
    assert intake["CSAT_SIGNING_KEY"] != intake["WEBHOOK_SIGNING_KEY"]
    assert Platform(tmp_path, PORTS, environ={"CSAT_SIGNING_KEY": "mine"}).service_environment("sla")[
        "CSAT_SIGNING_KEY"
    ] == "mine"


def test_a_port_is_handed_out_once_so_servers_picked_before_any_binds_never_share_one():
    ports = Ports.free()
    picked = [free_port() for _ in range(300)] + list(ports.servers().values())

    assert len(set(picked)) == len(picked)
    assert [ports.of(server) for server in DATABASE_SERVERS.values()] == list(range(ports.mongodb, ports.mongodb + 5))


def test_each_port_is_found_by_its_command_line_name_and_each_database_server_by_its_process_name():
    ports = Ports(mongodb=27017)

    assert [ports.of(name) for name in ("kafka", "mongodb", "intake")] == [9092, 27017, 8001], "--<name>-port"
    assert ports.of("mongodb_intake") == 27017 and ports.of("mongodb_sla") == 27019 == ports.database("sla")


def test_switchboard_up_refuses_ports_it_could_not_serve_and_says_which(capsys):
    for argv, expected in (
        (["--mongodb-port", "65533"], "out of range (1-65535) for mongodb_insights, mongodb_notify"),
        (["--smtp-port", "27019"], "smtp and mongodb_sla would share one"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["up", "--data-dir", "/nonexistent/never-made", *argv])

        assert exit_.value.code == 2
        assert expected in capsys.readouterr().err
