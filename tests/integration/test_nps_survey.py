"""The NPS relationship survey end to end on the session's platform (its notify sends the survey a second
after a solve, `tests/conftest.py`): the mail in the real SMTP sink; its links, fetched by a mail scanner,
answer nothing; the customer answers once with the form a link shows, posted as a browser posts it; the answer on the
topic, and no second survey to the same customer within 90 days."""

import re
import time
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

from shared import topics
from shared.signing import nps_signature
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

SUBJECT = "How likely are you to recommend us?"
NPS_RECEIVED = "support.customer.nps_received.v1"


class HtmlForm(HTMLParser):
    """A page's one form, read as a browser reads it: where and how it posts, and what it would send as it
    stands (checked radios, textareas); and every address the page would fetch besides itself."""

    def __init__(self) -> None:
        super().__init__()
        self.action = self.method = None
        self.fields: dict[str, str] = {}
        self.fetches: list[str] = []
        self._textarea: str | None = None

    @classmethod
    def of(cls, page: str) -> "HtmlForm":
        form = cls()
        form.feed(page)
        return form

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.fetches += [attributes[name] for name in ("src", "href") if name in attributes]
        if tag == "form":
            self.action, self.method = attributes["action"], attributes["method"]
        elif tag == "input" and (attributes.get("type") != "radio" or "checked" in attributes):
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "textarea":
            self._textarea = attributes["name"]
            self.fields[self._textarea] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None


async def solved_ticket(platform, customer: dict) -> str:
    ticket = await platform.submit_ticket(customer=customer)
    async with platform.client("intake") as intake:
        solved = await intake.patch(f"/v1/tickets/{ticket['id']}", json={"status": "solved"})
    assert solved.status_code == 200, solved.text
    return ticket["id"]


async def nps_decision(platform, ticket_id: str) -> dict:
    """Notify's nps_survey delivery for the ticket, once it has decided one (pending, sent or suppressed)."""
    async def decided():
        async with platform.client("notify") as notify:
            found = (await notify.get("/v1/notifications", params={"ticket_id": ticket_id})).json()["notifications"]
        return [n for n in found if n["kind"] == "nps_survey"]

    [decision] = await eventually(decided, timeout=30)
    return decision


async def test_a_solved_ticket_brings_one_survey_answered_once_on_its_links_page_and_no_second_within_90_days(running_platform):
    customer = {"id": unique("nps"), "name": "Nia"}
    customer["email"] = address = f"{customer['id']}@example.com"
    first = await solved_ticket(running_platform, customer)

    def surveys() -> list:
        return [m for m in running_platform.mail() if m["To"] == address and m["Subject"] == SUBJECT]

    [mail] = await eventually(surveys, timeout=30)
    links = dict(re.findall(r"^(\d+): (http\S+)", mail.get_body(("plain",)).get_content(), re.MULTILINE))
    assert list(links) == [str(score) for score in range(11)]
    url = urlsplit(links["9"])
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}" == running_platform.platform.url("intake")
    assert url.path == f"/v1/customers/{customer['id']}/nps" and query["ticket_id"] == first

    def link(**changes) -> str:
        """The link with some parameters changed (None: left out)."""
        params = {name: value for name, value in {**query, **changes}.items() if value is not None}
        return f"{url.scheme}://{url.netloc}{url.path}?{urlencode(params)}"

    key = running_platform.platform.service_environment("intake")["CSAT_SIGNING_KEY"]
    expired_at = int(time.time()) - 1
    expired = nps_signature(key, query["survey"], customer["id"], first, expired_at)
    async with httpx.AsyncClient(timeout=10) as scanner:  # no API key: the link's signature is the customer's
        forged = await scanner.get(link(ticket_id="TKT-someone-elses"))
        too_late = await scanner.get(link(expires=expired_at, signature=expired))
        out_of_range = await scanner.get(link(score=11))
        scanned = [await scanner.get(url) for url in links.values()]  # a mail scanner fetches every link

    assert forged.status_code == 403 and forged.json()["detail"] == "the survey link's signature is not valid"
    assert too_late.status_code == 403 and too_late.json()["detail"] == "the survey link has expired"
    assert "<form" not in forged.text + too_late.text
    assert out_of_range.status_code == 422 and "score" in out_of_range.json()["message"]
    assert {(page.status_code, page.headers["content-type"]) for page in scanned} == {(200, "text/html; charset=utf-8")}

    # The customer follows the link in a browser, picks another score, writes a comment and sends the form.
    async with httpx.AsyncClient(timeout=10, headers={"Accept": "text/html,*/*;q=0.8"}) as browser:
        shown = await browser.get(links["9"])
        form = HtmlForm.of(shown.text)
        assert form.method == "post" and form.fields == {"score": "9", "comment": ""}  # 9 preselected
        assert not form.fetches, "the page asks for something besides itself"
        sent = await browser.post(urljoin(links["9"], form.action), data={**form.fields, "score": "10",
                                                                           "comment": "Quick\r\nand kind"})
        shown_again = await browser.get(links["3"])
    assert sent.status_code == 200 and "You answered 10 out of 10." in sent.text, sent.text
    assert shown_again.status_code == 409 and "answered already" in shown_again.text
    assert "<form" not in shown_again.text

    async with httpx.AsyncClient(timeout=10) as customer_again:
        posted_again = await customer_again.post(link(score=None), json={"score": 5, "comment": "changed my mind"})
        form_again = await customer_again.post(link(score=None), data={"score": "5"})
    assert posted_again.status_code == 409
    assert posted_again.json()["detail"] == f"survey {query['survey']} was already answered; an answer cannot be changed"
    assert form_again.status_code == 409 and "answered already" in form_again.text

    def answers(events: list[dict]) -> list[dict]:
        return [e for e in events if e["type"] == NPS_RECEIVED and e["data"]["customer_id"] == customer["id"]]

    [received] = answers(await running_platform.events(topics.TICKETS, until=answers, timeout=20))
    assert received["subject"] == first
    assert {k: received["data"][k] for k in ("survey_id", "ticket_id", "score", "comment")} == {
        "survey_id": query["survey"], "ticket_id": first, "score": 10, "comment": "Quick\nand kind"
    }

    second = await solved_ticket(running_platform, customer)
    decision = await nps_decision(running_platform, second)  # the watermark: notify has decided on the second solve
    assert (decision["state"], decision["reason"]) == (
        "suppressed", "at most one nps_survey per customer every 90 days: another is sent or due within that"
    )
    assert len(surveys()) == 1
    assert (await nps_decision(running_platform, first))["state"] == "sent"
