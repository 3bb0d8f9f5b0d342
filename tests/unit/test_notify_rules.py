"""The rules file: the shipped one loads, and a wrong one is refused at start with the reason."""

import pytest

from services.notify.rules import load_rules
from shared.rules_file import RulesFileError
from shared import topics

GOOD = """
version: 1
rules:
  - kind: acknowledgement
    event: support.ticket.created.v1
    to: [customer]
"""


def write(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_the_shipped_rules_cover_the_issue():
    rules = load_rules()

    assert rules.kinds == [
        "acknowledgement", "agent_reply", "assignment", "sla_warning", "sla_breached", "csat_survey", "follow_up",
        "nps_survey",
    ]
    survey = rules.of_kind("csat_survey")
    assert survey.delay_seconds == 24 * 3600 and not survey.transactional
    assert rules.cancelled_by("support.ticket.reopened.v1") == ["csat_survey", "follow_up", "nps_survey"]
    nps = rules.of_kind("nps_survey")
    assert (nps.event, nps.to, nps.delay_seconds) == ("support.ticket.solved.v1", ["customer"], 7 * 24 * 3600)
    assert nps.once_per_customer_seconds == 90 * 24 * 3600 and not nps.transactional and not nps.urgent
    assert rules.once_per_customer("support.ticket.solved.v1") == [nps]
    assert rules.once_per_customer("support.ticket.reopened.v1") == [nps]
    assert rules.once_per_customer("support.ticket.created.v1") == []


def test_notify_consumes_the_three_topics_it_needs():
    from services.notify.rules import SUPPORTED_EVENTS

    assert {SUPPORTED_EVENTS[t][0] for t in load_rules().event_types()} == {topics.TICKETS, topics.ROUTING, topics.SLA}


def test_a_minimal_file_loads(tmp_path):
    assert load_rules(write(tmp_path, GOOD)).kinds == ["acknowledgement"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version: 1\nrules: [", "not valid YAML"),
        (GOOD.replace("support.ticket.created.v1", "support.ticket.exploded.v1"), "unknown event type 'support.ticket.exploded.v1'"),
        (GOOD.replace("[customer]", "[everyone]"), "rules.0.to.0"),
        (GOOD + "    when: {colour: red}\n", "'when' names fields support.ticket.created.v1 does not have: colour"),
        (GOOD.replace("[customer]", "[agent]"), "audience 'agent' needs an event naming an agent"),
        (GOOD + GOOD.split("rules:\n")[1], "repeated: acknowledgement"),
        (GOOD + "    delay_seconds: -1\n", "rules.0.delay_seconds"),
        (GOOD + "    colour: red\n", "rules.0.colour: Extra inputs are not permitted"),
        (GOOD.replace("acknowledgement", "digest"), "reserved"),
        (GOOD.replace("version: 1", "version: 2"), "version"),
        (GOOD + "    once_per_customer_seconds: 0\n", "rules.0.once_per_customer_seconds"),
        (GOOD.replace("[customer]", "[customer, supervisors]") + "    once_per_customer_seconds: 60\n",
         "once_per_customer_seconds needs 'to: [customer]' alone"),
    ],
)
def test_a_wrong_rules_file_is_refused_with_the_reason(tmp_path, text, reason):
    path = write(tmp_path, text)

    with pytest.raises(RulesFileError, match=rf"^{path}:\d+: ") as refused:
        load_rules(path)

    assert reason in str(refused.value)


def test_a_missing_rules_file_is_refused(tmp_path):
    with pytest.raises(RulesFileError, match="cannot read"):
        load_rules(tmp_path / "nope.yaml")


def test_notify_refuses_to_start_with_a_wrong_rules_file_and_says_why(tmp_path):
    import os
    import subprocess
    import sys

    path = write(tmp_path, GOOD.replace("[customer]", "[everyone]"))
    environ = {**os.environ, "NOTIFY_RULES_PATH": str(path), "HTTP_PORT": "1"}

    started = subprocess.run(
        [sys.executable, "-m", "services.notify"], env=environ, capture_output=True, text=True, timeout=60
    )

    assert started.returncode != 0
    assert f"notify cannot start: invalid notification rules: {path}:" in started.stderr
    assert "rules.0.to.0" in started.stderr
