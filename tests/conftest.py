"""Fixtures that start real things: the platform as `switchboard up` runs it, on free ports."""

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.support import RunningPlatform, started_platform

# CI explores the same examples on every run, so a red build is reproducible and never a roll of
# the dice; developers' runs keep drawing new ones (and keep the failures they find in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def running_platform(tmp_path_factory) -> Iterator[RunningPlatform]:
    with started_platform(tmp_path_factory.mktemp("switchboard")) as platform:
        yield platform
