"""Fixtures that start real things: the platform as `switchboard up` runs it, on free ports."""

import os
from collections.abc import Iterator

import pytest

from shared.launcher.platform import Platform
from tests.support import RunningPlatform, free_ports


@pytest.fixture(scope="session")
def running_platform(tmp_path_factory) -> Iterator[RunningPlatform]:
    platform = Platform(tmp_path_factory.mktemp("switchboard"), free_ports(), environ=_clean_environ())
    platform.start()
    try:
        yield RunningPlatform(platform)
    finally:
        platform.stop()


def _clean_environ() -> dict[str, str]:
    """The test's own environment, without any external infrastructure a developer may have set."""
    ignored = {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL", "SMTP_URL", "SWITCHBOARD_API_KEYS"}
    return {name: value for name, value in os.environ.items() if name not in ignored}
