"""Triage rules: loading (with the line of a mistake) and evaluation, explainable and caller-first."""

import re
from pathlib import Path

import pytest

from services.intake.triage import (
    READ_FOR_TONE,
    RULES_FILE,
    Triage,
    TriageInput,
    build_english_sentiment,
    build_language_detector,
    load_rules,
)
from shared.events import Channel, CustomerTier, Priority
from shared.rules_file import RulesFileError


@pytest.fixture(scope="module")
def triage() -> Triage:
    rules = load_rules(RULES_FILE)
    return Triage(rules, build_language_detector(["en", "de", "fr"]), build_english_sentiment())


def given(subject: str, body: str, **fields) -> TriageInput:
    return TriageInput(subject=subject, body=body, channel=fields.pop("channel", Channel.WEB), **fields)


def test_the_shipped_rules_file_is_valid():
    rules = load_rules(RULES_FILE)
    assert "en" in rules.languages and rules.categories and rules.priority


def test_a_plain_english_question_is_normal_and_says_why(triage):
    result = triage.triage(given("Opening hours", "Hello, when does your shop open on Saturdays? Thanks"))

    assert (result.language, result.priority, result.category, result.required_skills) == ("en", Priority.NORMAL, None, [])
    assert result.sentiment is not None and result.sentiment > 0
    assert "priority normal: default" in result.reasons
    assert "language en: detected" in result.reasons


def test_a_refund_is_billing_with_its_skill_tag_and_raised_priority(triage):
    result = triage.triage(given("Charged twice", "I was charged twice for order 1042, please refund one payment."))

    assert (result.category, result.required_skills, result.tags) == ("billing", ["billing"], ["billing"])
    assert result.priority is Priority.HIGH
    assert "category billing: keyword 'refund'" in result.reasons
    assert "priority high: refund requested ('refund')" in result.reasons


def test_a_vip_customer_or_a_strongly_negative_message_raises_the_priority(triage):
    vip = triage.triage(given("Question", "Where can I find my settings page?", tier=CustomerTier.VIP))
    angry = triage.triage(given("Terrible", "This is terrible, awful, horrible service. I hate it and I am furious."))
    angry_vip = triage.triage(given("Terrible", "This is terrible, awful, horrible. I hate it.", tier=CustomerTier.VIP))

    assert vip.priority is Priority.HIGH and "priority high: vip tier" in vip.reasons
    assert angry.priority is Priority.HIGH and angry.sentiment <= -0.6
    assert any(reason.startswith("sentiment -0.") for reason in angry.reasons)
    assert angry_vip.priority is Priority.URGENT and "priority urgent: unhappy vip" in angry_vip.reasons


def test_a_long_message_is_read_for_language_and_mood_from_its_opening_and_for_keywords_whole(triage):
    calm = "Thank you for the quick help last week, everything works. " * 20
    angry = "This is terrible, awful, horrible service. I hate it and I am furious. " * 30  # outweighs the calm whole
    body = calm + angry + "Please refund me."

    result = triage.triage(given("A question", body))

    assert len(calm) > READ_FOR_TONE, "the angry part lies past what is read for tone"
    assert result.sentiment > 0 and "priority high: strongly negative sentiment" not in result.reasons
    read = [re.search(r", from the first ([\d,]+) characters$", reason) for reason in result.reasons
            if reason.startswith(("language", "sentiment"))]
    read_lengths = [int(found[1].replace(",", "")) for found in read]
    assert len(read_lengths) == 2 and all(READ_FOR_TONE - 100 < length <= READ_FOR_TONE for length in read_lengths)
    assert result.category == "billing", "keywords are looked for in the whole message ('refund' at its end)"


def test_an_outage_is_urgent_and_needs_technical_skills(triage):
    result = triage.triage(given("Site is down", "Your checkout is down since this morning, we have an outage."))

    assert (result.category, result.priority, result.required_skills) == ("outage", Priority.URGENT, ["technical"])


def test_other_languages_are_detected_and_scored_with_the_rules_own_words(triage):
    result = triage.triage(given("Rechnung falsch", "Ich bin sehr wütend, die Rechnung ist eine Frechheit. Bitte um Rückerstattung."))

    assert result.language == "de" and result.category == "billing"
    assert result.sentiment == -1.0 and "'wütend'" in " ".join(result.reasons)
    assert result.priority is Priority.HIGH


def test_what_the_caller_supplies_wins_and_says_so(triage):
    result = triage.triage(
        given("Outage!", "Everything is down, refund me", priority=Priority.LOW, required_skills=["vip-desk"],
              language="fr", category="account", tags=["Escalated"])
    )

    assert (result.priority, result.required_skills, result.language, result.category) == (
        Priority.LOW, ["vip-desk"], "fr", "account")
    assert result.tags == ["account", "escalated"]
    for field in ("priority low", "required skills vip-desk", "language fr", "category account"):
        assert f"{field}: set by the caller" in result.reasons


def test_phone_calls_are_high(triage):
    assert triage.triage(given("Call", "Customer called about settings", channel=Channel.PHONE)).priority is Priority.HIGH


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_a_rules_file_that_is_not_yaml_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "version: 1\nlanguages: [en\ncategories: []\n")
    with pytest.raises(RulesFileError, match=rf"^{path}:\d+: not valid YAML"):
        load_rules(path)


def test_a_rules_file_with_a_wrong_field_names_the_file_line_and_reason(tmp_path):
    path = write(
        tmp_path,
        "version: 1\nlanguages: [en]\npriority:\n  - when: {tier: vip}\n    priority: asap\n    reason: vip\n",
    )
    with pytest.raises(RulesFileError) as refused:
        load_rules(path)
    assert str(refused.value).startswith(f"{path}:5: priority.0.priority: Input should be")


def test_unknown_languages_and_empty_conditions_are_refused(tmp_path):
    with pytest.raises(RulesFileError, match=r":2: languages: .*'xx' is not an ISO 639-1"):
        load_rules(write(tmp_path, "version: 1\nlanguages: [en, xx]\n"))
    with pytest.raises(RulesFileError, match="a condition needs at least one"):
        load_rules(write(tmp_path, "version: 1\nlanguages: [en]\npriority:\n  - {when: {}, priority: high, reason: r}\n"))
    with pytest.raises(RulesFileError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
