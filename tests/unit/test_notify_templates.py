"""Templates: a missing or broken one stops notify at start-up with the reason; locales fall back to English."""

import pytest

from services.notify.planner import SAMPLE_CONTEXT
from services.notify.rules import load_rules
from services.notify.templates import Templates, UnusableTemplate

GOOD = {
    "acknowledgement.en.subject.j2": "[{{ ticket_id }}] {{ subject }}",
    "acknowledgement.en.txt.j2": "{{ ticket_id }}",
    "acknowledgement.en.html.j2": "<p>{{ ticket_id }}</p>",
    "digest.en.subject.j2": "digest",
    "digest.en.txt.j2": "{{ items|length }}",
    "digest.en.html.j2": "<p>{{ items|length }}</p>",
}


def write(directory, templates):
    for name, source in templates.items():
        (directory / name).write_text(source)


def test_a_template_that_does_not_compile_is_refused_by_name(tmp_path):
    write(tmp_path, {**GOOD, "acknowledgement.en.html.j2": "<p>{{ ticket_id </p>"})

    with pytest.raises(UnusableTemplate, match=r"acknowledgement\.en\.html\.j2: TemplateSyntaxError"):
        Templates(tmp_path, kinds=["acknowledgement"])


def test_a_missing_template_is_refused_by_name(tmp_path):
    write(tmp_path, {name: source for name, source in GOOD.items() if name != "acknowledgement.en.txt.j2"})

    with pytest.raises(UnusableTemplate, match=r"acknowledgement\.en\.txt\.j2: TemplateNotFound"):
        Templates(tmp_path, kinds=["acknowledgement"])


def test_a_kind_in_the_rules_without_templates_is_refused(tmp_path):
    write(tmp_path, GOOD)

    with pytest.raises(UnusableTemplate, match=r"csat_survey\.en\.subject\.j2"):
        Templates(tmp_path, kinds=["acknowledgement", "csat_survey"])


def test_a_locale_with_only_some_parts_is_refused(tmp_path):
    write(tmp_path, {**GOOD, "acknowledgement.fr.subject.j2": "[{{ ticket_id }}] Bonjour"})

    with pytest.raises(UnusableTemplate, match=r"acknowledgement\.fr\.txt\.j2: TemplateNotFound"):
        Templates(tmp_path, kinds=["acknowledgement"])


def test_the_most_specific_locale_wins_and_english_is_the_fallback(tmp_path):
    write(tmp_path, {**GOOD, **{name.replace(".en.", ".pt.").replace("acknowledgement", "acknowledgement"): "pt " + source
                               for name, source in GOOD.items() if name.startswith("acknowledgement")}})
    templates = Templates(tmp_path, kinds=["acknowledgement"])

    assert templates.locale_for("acknowledgement", "pt-BR") == "pt"
    assert templates.locale_for("acknowledgement", "PT") == "pt"
    assert templates.locale_for("acknowledgement", "de") == "en"
    assert templates.locale_for("acknowledgement", None) == "en"
    assert templates.render("acknowledgement", "pt-BR", {"ticket_id": "T", "subject": "S"}).text == "pt {{ ticket_id }}".replace("{{ ticket_id }}", "T")


def test_the_shipped_templates_load_for_the_shipped_rules_and_render_with_every_variable():
    Templates(kinds=load_rules().kinds).check(SAMPLE_CONTEXT)


def test_a_template_naming_a_variable_that_does_not_exist_is_refused_at_start(tmp_path):
    write(tmp_path, {**GOOD, "acknowledgement.en.txt.j2": "{{ ticket_id }} {{ ticket_number }}"})
    templates = Templates(tmp_path, kinds=["acknowledgement"])

    with pytest.raises(UnusableTemplate, match=r"acknowledgement\.en\.txt\.j2: UndefinedError: 'ticket_number' is undefined"):
        templates.check(SAMPLE_CONTEXT)


def test_notify_refuses_to_start_with_a_broken_template_and_says_which_and_why(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from services.notify.templates import TEMPLATES_DIRECTORY

    shutil.copytree(TEMPLATES_DIRECTORY, tmp_path, dirs_exist_ok=True)
    (tmp_path / "csat_survey.de.txt.j2").write_text("{{ csat_links.items() }} {{ survey_url }}")
    environ = {**os.environ, "NOTIFY_TEMPLATES_DIR": str(tmp_path), "HTTP_PORT": "1"}

    started = subprocess.run(
        [sys.executable, "-m", "services.notify"], env=environ, capture_output=True, text=True, timeout=60
    )

    assert started.returncode != 0
    assert "template csat_survey.de.txt.j2: UndefinedError: 'survey_url' is undefined" in started.stderr


def test_a_kind_is_a_survey_when_a_template_of_it_shows_the_signed_links_whatever_its_name(tmp_path):
    rating = {"rating_request.en.subject.j2": "Rate us", "rating_request.en.html.j2": "<p>Rate us</p>",
              "rating_request.en.txt.j2": "{% for score, url in csat_links.items() %}{{ score }}: {{ url }}\n{% endfor %}"}
    write(tmp_path, {**GOOD, **rating})

    templates = Templates(tmp_path, kinds=["acknowledgement", "rating_request"])

    assert templates.kinds_using("csat_links") == {"rating_request"}


def test_the_german_acknowledgement_words_the_reply_time_in_german():
    templates = Templates(kinds=load_rules().kinds)

    rendered = templates.render("acknowledgement", "de", {**SAMPLE_CONTEXT, "first_reply_within_seconds": 8 * 3600})

    assert rendered.locale == "de"
    assert "innerhalb von 8 Stunden, spätestens 2026-03-02 13:30 UTC" in rendered.text
    assert "innerhalb von 8 Stunden" in rendered.html
