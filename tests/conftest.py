"""Fixtures that start real things: the platform as `switchboard up` runs it, on free ports."""

from collections.abc import Iterator

import pytest

from tests.support import RunningPlatform, started_platform


@pytest.fixture(scope="session")
def running_platform(tmp_path_factory) -> Iterator[RunningPlatform]:
    with started_platform(tmp_path_factory.mktemp("switchboard")) as platform:
        yield platform
