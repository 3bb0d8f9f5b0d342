"""Fixtures that start real things: the platform as `switchboard up` runs it, on free ports."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

from services.notify.rules import RULES_FILE
from tests.support import RunningPlatform, started_platform, take_every_ticket_no_test_claims

# CI explores the same examples on every run, so a red build is reproducible and never a roll of
# the dice; developers' runs keep drawing new ones (and keep the failures they find in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

NPS_SURVEY_DELAY_SECONDS = 1
"""The session's platform sends the NPS survey this long after a solve, not a week, so a test sees it."""


def notify_rules_with_a_prompt_nps_survey(directory: Path) -> Path:
    """The shipped notify rules, but for the NPS survey's delay: its once-per-customer period stays 90 days."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    [nps] = [rule for rule in rules["rules"] if rule["kind"] == "nps_survey"]
    nps["delay_seconds"] = NPS_SURVEY_DELAY_SECONDS
    path = directory / "notify-rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def running_platform(tmp_path_factory) -> Iterator[RunningPlatform]:
    data_dir = tmp_path_factory.mktemp("switchboard")
    rules = notify_rules_with_a_prompt_nps_survey(tmp_path_factory.mktemp("notify-rules"))
    with started_platform(data_dir, NOTIFY_RULES_PATH=str(rules)) as platform:
        take_every_ticket_no_test_claims(platform)
        yield platform

