"""The NPS relationship survey end to end on the session's platform (its notify sends the survey a second
after a solve, `tests/conftest.py`): the mail in the real SMTP sink; its links, fetched by a mail scanner,
answer nothing; the customer answers once with the form a link shows, posted as a browser posts it; the answer on the
topic, and no second survey to the same customer within 90 days."""

import re
import time
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

from shared import topics
from shared.signing import nps_signature
from tests.support import HtmlForm, eventually, unique

pytestmark = pytest.mark.integration

SUBJECT = "How likely are you to recommend us?"
NPS_RECEIVED = "support.customer.nps_received.v1"


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
        expired_page = await browser.get(link(expires=expired_at, signature=expired))
        forged_post = await browser.post(link(score=None, ticket_id="TKT-someone-elses"), data={"score": "10"})
    assert sent.status_code == 200 and "You answered 10 out of 10." in sent.text, sent.text
    assert shown_again.status_code == 409 and "answered already" in shown_again.text
    assert "<form" not in shown_again.text
    # A browser is told in a page, not in JSON, why a link does not work.
    assert expired_page.status_code == 403 and expired_page.headers["content-type"] == "text/html; charset=utf-8"
    assert "This survey link cannot be used." in expired_page.text and "the survey link has expired" in expired_page.text
    assert expired_page.headers["content-security-policy"].startswith("default-src 'none'") and "<form" not in expired_page.text
    assert forged_post.status_code == 403 and "the survey link&#x27;s signature is not valid" in forged_post.text

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
