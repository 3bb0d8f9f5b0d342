"""A template that cannot be used must stop notify at start-up, with the reason."""

import pytest

from services.notify.templates import Templates, UnusableTemplate

GOOD = {
    "acknowledgement.en.subject.j2": "[{{ ticket_id }}] {{ subject }}",
    "acknowledgement.en.txt.j2": "{{ ticket_id }}",
    "acknowledgement.en.html.j2": "<p>{{ ticket_id }}</p>",
}


def write(directory, templates):
    for name, source in templates.items():
        (directory / name).write_text(source)


def test_a_template_that_does_not_compile_is_refused_by_name(tmp_path):
    write(tmp_path, {**GOOD, "acknowledgement.en.html.j2": "<p>{{ ticket_id </p>"})

    with pytest.raises(UnusableTemplate, match=r"acknowledgement\.en\.html\.j2: TemplateSyntaxError"):
        Templates(tmp_path)


def test_a_missing_template_is_refused_by_name(tmp_path):
    write(tmp_path, {name: source for name, source in GOOD.items() if "txt" not in name})

    with pytest.raises(UnusableTemplate, match=r"acknowledgement\.en\.txt\.j2: TemplateNotFound"):
        Templates(tmp_path)


def test_the_shipped_templates_load():
    Templates()
