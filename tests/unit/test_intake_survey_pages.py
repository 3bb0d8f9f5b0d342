"""The survey links' pages (NPS and CSAT): pure HTML, so checked here, cheaply; the integration tests follow them."""

from html.parser import HTMLParser

from services.intake import survey_pages


class Tags(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def of(self, name: str) -> list[dict]:
        return [attributes for tag, attributes in self.tags if tag == name]


def question(**changes) -> Tags:
    signed = {"survey": "nps-1", "ticket_id": "TKT-1", "expires": 1900000000, "signature": "ab" * 32}
    return Tags(survey_pages.question(survey_pages.NPS, signed={**signed, **changes}, score=7))


def test_the_question_preselects_the_linked_score_and_posts_back_the_signed_parameters():
    page = question()

    [form] = page.of("form")
    assert form == {"method": "post", "action": f"nps?survey=nps-1&ticket_id=TKT-1&expires=1900000000&signature={'ab' * 32}"}
    radios = page.of("input")
    assert [radio["value"] for radio in radios] == [str(score) for score in range(11)]
    assert [radio["value"] for radio in radios if "checked" in radio] == ["7"]
    [comment] = page.of("textarea")
    assert comment["name"] == "comment" and comment["maxlength"] == str(survey_pages.COMMENT_MAX_CHARS)


def test_the_csat_question_offers_1_to_5_and_says_which_ticket_it_asks_about():
    page = survey_pages.question(
        survey_pages.CSAT, signed={"expires": 1900000000, "signature": "cd" * 32}, score=2,
        about="Your request <TKT-9> was solved.",
    )

    tags = Tags(page)
    [form] = tags.of("form")
    assert form == {"method": "post", "action": f"csat?expires=1900000000&signature={'cd' * 32}"}
    radios = tags.of("input")
    assert [radio["value"] for radio in radios] == ["1", "2", "3", "4", "5"]
    assert [radio["value"] for radio in radios if "checked" in radio] == ["2"]
    assert [textarea["name"] for textarea in tags.of("textarea")] == ["comment"]
    assert "Your request &lt;TKT-9&gt; was solved." in page
    assert "You answered 4 out of 5." in survey_pages.thanks(survey_pages.CSAT, 4)


def test_a_ticket_id_from_the_link_cannot_break_out_of_the_form():
    page = question(ticket_id="T'><script>alert(1)</script>")

    assert not page.of("script")
    [form] = page.of("form")
    assert "ticket_id=T%27%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in form["action"]


def test_no_page_fetches_anything_besides_itself():
    for page in (survey_pages.question(survey_pages.NPS, signed={"survey": "s"}, score=0),
                 survey_pages.question(survey_pages.CSAT, signed={"expires": 1}, score=1, about="t"),
                 survey_pages.thanks(survey_pages.NPS, 3), survey_pages.answered_already(),
                 survey_pages.not_taken("ticket t is open"), survey_pages.link_refused("the survey link has expired")):
        assert not [attributes for _, attributes in Tags(page).tags if {"src", "href"} & set(attributes)]
    assert "default-src 'none'" in survey_pages.HEADERS["Content-Security-Policy"]
