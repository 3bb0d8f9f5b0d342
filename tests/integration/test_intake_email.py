"""The inbound email webhook end to end: signatures, replays, new tickets, threading, deduplication."""

import time
import uuid

import pytest

from shared import topics
from shared.signing import webhook_signature

pytestmark = pytest.mark.integration


def signed(platform, body: bytes, *, timestamp: int | None = None, key: str | None = None) -> dict:
    key = key or platform.platform.service_environment("intake")["INBOUND_EMAIL_SIGNING_KEY"]
    timestamp = timestamp or int(time.time())
    return {"X-Switchboard-Timestamp": str(timestamp), "X-Switchboard-Signature": webhook_signature(key, timestamp, body),
            "Content-Type": "message/rfc822"}


def raw_email(*, message_id: str, subject: str, body: str, sender: str = "Ann Lee <ann@example.com>",
              in_reply_to: str | None = None) -> bytes:
    headers = [f"From: {sender}", "To: support@switchboard.local", f"Subject: {subject}", f"Message-ID: {message_id}"]
    if in_reply_to:
        headers += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    return ("\r\n".join(headers) + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()


async def post(platform, body: bytes, headers: dict):
    async with platform.client("intake") as intake:
        intake.headers.pop("Authorization")  # the signature authenticates the mail relay
        return await intake.post("/v1/inbound/email", content=body, headers=headers)


async def test_an_email_opens_a_ticket_and_replies_thread_into_it(running_platform):
    first_id = f"<{uuid.uuid4().hex}@mail.example.com>"
    first = raw_email(message_id=first_id, subject="My parcel never arrived",
                      body="Hello, the parcel for order 77 never arrived.\n\n-- \nAnn")
    opened = await post(running_platform, first, signed(running_platform, first))
    assert opened.status_code == 201, opened.text
    ticket_id = opened.json()["ticket_id"]
    assert opened.json()["action"] == "created"

    # A reply to the customer's own earlier mail (its Message-ID), with the history quoted.
    reply = raw_email(message_id=f"<{uuid.uuid4().hex}@mail.example.com>", subject="Re: My parcel never arrived",
                      body="Any news?\n\nOn Mon, Ann wrote:\n> Hello, the parcel never arrived.", in_reply_to=first_id)
    # A reply to notify's acknowledgement (it refers to the ticket's thread root).
    to_notify = raw_email(message_id=f"<{uuid.uuid4().hex}@mail.example.com>", subject="Re: your request",
                          body="Also, it was a gift.", in_reply_to=f"<{ticket_id}@switchboard.local>")
    # Only the ticket reference in the subject.
    by_subject = raw_email(message_id=f"<{uuid.uuid4().hex}@mail.example.com>", subject=f"AW: [{ticket_id}] Paket",
                           body="Danke!")
    # Someone else quoting the ticket id: ids can be guessed, so it does not thread.
    stranger = raw_email(message_id=f"<{uuid.uuid4().hex}@mail.example.com>", subject=f"Re: [{ticket_id}] hi",
                         body="Let me in", sender="mallory@example.com")
    answers = [await post(running_platform, mail, signed(running_platform, mail))
               for mail in (reply, to_notify, by_subject, stranger)]

    assert [a.json()["action"] for a in answers] == ["threaded"] * 3 + ["created"]
    assert {a.json()["ticket_id"] for a in answers[:3]} == {ticket_id} and answers[3].json()["ticket_id"] != ticket_id
    async with running_platform.client("intake") as intake:
        ticket = (await intake.get(f"/v1/tickets/{ticket_id}")).json()
        messages = (await intake.get(f"/v1/tickets/{ticket_id}/messages")).json()
    assert ticket["channel"] == "email" and ticket["customer"]["email"] == "ann@example.com"
    assert ticket["body"] == "Hello, the parcel for order 77 never arrived."
    assert ticket["category"] == "shipping"
    assert [m["body"] for m in messages] == ["Any news?", "Also, it was a gift.", "Danke!"]
    events = await running_platform.events(
        topics.TICKETS,
        until=lambda es: sum(e["subject"] == ticket_id and "message_added" in e["type"] for e in es) >= 3,
    )
    added = [e for e in events if e["subject"] == ticket_id and "message_added" in e["type"]]
    assert [e["data"]["author_type"] for e in added] == ["customer"] * 3


async def test_the_same_message_id_twice_gives_one_ticket_and_the_same_answer(running_platform):
    message_id = f"<{uuid.uuid4().hex}@mail.example.com>"
    mail = raw_email(message_id=message_id, subject="Login", body="I cannot sign in")
    first = await post(running_platform, mail, signed(running_platform, mail))
    again = await post(running_platform, mail, signed(running_platform, mail, timestamp=int(time.time()) - 5))

    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"


async def test_the_json_form_is_accepted(running_platform):
    import json

    body = json.dumps({"from": "Bo <bo@example.com>", "subject": "Invoice", "text": "Please send my invoice again.",
                       "message_id": f"<{uuid.uuid4().hex}@mail.example.com>"}).encode()
    headers = {**signed(running_platform, body), "Content-Type": "application/json"}
    answer = await post(running_platform, body, headers)
    assert answer.status_code == 201 and answer.json()["action"] == "created"


async def test_unsigned_stale_forged_and_replayed_webhooks_are_refused(running_platform):
    mail = raw_email(message_id=f"<{uuid.uuid4().hex}@mail.example.com>", subject="Hi", body="Hello")
    headers = signed(running_platform, mail)
    accepted = await post(running_platform, mail, headers)
    replayed = await post(running_platform, mail, headers)
    unsigned = await post(running_platform, mail, {"Content-Type": "message/rfc822"})
    stale = await post(running_platform, mail, signed(running_platform, mail, timestamp=int(time.time()) - 3600))
    forged = await post(running_platform, mail, signed(running_platform, mail, key="guessed"))
    no_sender = b"Subject: hi\r\n\r\nhello"
    unreadable = await post(running_platform, no_sender, signed(running_platform, no_sender))

    assert accepted.status_code == 201
    assert replayed.status_code == 409 and "already received" in replayed.json()["detail"]
    assert unsigned.status_code == 401 and "missing" in unsigned.json()["detail"]
    assert stale.status_code == 401 and "seconds away" in stale.json()["detail"]
    assert forged.status_code == 401 and "does not match" in forged.json()["detail"]
    assert unreadable.status_code == 422 and "From" in unreadable.json()["detail"]


async def test_a_reply_to_notifys_acknowledgement_threads_by_its_headers(running_platform):
    import asyncio

    address = f"{uuid.uuid4().hex[:10]}@example.com"
    first = raw_email(message_id=f"<{uuid.uuid4().hex}@mail.example.com>", subject="Question about my account",
                      body="How do I change my password?", sender=f"Dee <{address}>")
    opened = await post(running_platform, first, signed(running_platform, first))
    ticket_id = opened.json()["ticket_id"]
    async with asyncio.timeout(60):
        while not (mails := [m for m in running_platform.mail() if m["To"] == address]):
            await asyncio.sleep(0.3)
    acknowledgement = mails[0]
    assert acknowledgement["X-Switchboard-Ticket"] == ticket_id

    headers = [f"From: Dee <{address}>", "To: support@switchboard.local", "Subject: Re: thanks",  # no [TKT-…]
               f"Message-ID: <{uuid.uuid4().hex}@mail.example.com>",
               f"In-Reply-To: {acknowledgement['Message-ID']}",
               f"References: {acknowledgement.get('References', '')} {acknowledgement['Message-ID']}"]
    reply = ("\r\n".join(headers) + "\r\n\r\nFound it, thanks!\r\n\r\nOn Tue, Support wrote:\r\n> We got it").encode()
    answer = await post(running_platform, reply, signed(running_platform, reply))

    assert answer.status_code == 201 and answer.json() == {
        "ticket_id": ticket_id, "message_id": answer.json()["message_id"], "action": "threaded"}
    async with running_platform.client("intake") as intake:
        [message] = (await intake.get(f"/v1/tickets/{ticket_id}/messages")).json()
    assert message["body"] == "Found it, thanks!"
