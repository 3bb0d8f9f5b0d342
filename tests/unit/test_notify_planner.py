"""What each rule owes whom, decided without I/O: pending, held, or suppressed with a reason."""

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from services.notify.domain import DeliveryChannel, DeliveryState, QuietHours, RecipientRole, digest_key
from services.notify.planner import (
    AgentContact,
    PlanConfig,
    Preferences,
    TicketView,
    fold_into_digest,
    plan,
    released,
    resolve,
    thread_root,
)
from services.notify.rules import Audience, load_rules
from services.notify.templates import Templates
from shared.clock import to_ms
from shared.envelope import new_event
from shared.events import (
    AuthorType,
    Channel,
    Customer,
    Priority,
    SlaBreached,
    TicketAssigned,
    TicketCreated,
    TicketMessageAdded,
    TicketSolved,
)

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
RULES = load_rules()
TEMPLATES = Templates(kinds=RULES.kinds)
SURVEYS = TEMPLATES.kinds_using("csat_links")
CONFIG = PlanConfig(csat_signing_key="k3y", team_webhook_url="http://hooks.example/team", survey_kinds=SURVEYS)
TICKET = TicketView(
    ticket_id="TKT-1", subject="Refund", customer_id="c1", customer_email="ann@example.com", customer_name="Ann"
)


def rule(kind: str):
    return next(r for r in RULES.rules if r.kind == kind)


def created(customer: Customer = Customer(id="c1", email="ann@example.com", name="Ann"), subject="Refund", language=None):
    data = TicketCreated(
        ticket_id="TKT-1", channel=Channel.WEB, customer=customer, subject=subject, priority=Priority.NORMAL,
        required_skills=[], created_at=NOW, language=language,
    )
    return new_event(data, source="switchboard/intake", subject="TKT-1")


def decide(kind, event, ticket=TICKET, preferences=None, contacts=None, audience=Audience.CUSTOMER, config=CONFIG):
    recipient = resolve(audience, event, ticket, contacts=contacts or {}, preferences=preferences, config=config)
    return plan(rule(kind), recipient, event, ticket, preferences, render=TEMPLATES.render, now=NOW, config=config)


def test_the_acknowledgement_waits_briefly_for_the_first_reply_clock_when_none_started_yet():
    event = created()

    delivery = decide("acknowledgement", event)

    assert delivery.id == f"{event.id}:customer:acknowledgement"
    assert (delivery.state, delivery.awaiting) == (DeliveryState.PENDING, "sla:first_reply")
    assert delivery.next_attempt_at == NOW + timedelta(seconds=5)
    assert delivery.subject == "[TKT-1] We received your request: Refund"
    assert "as soon as possible" in delivery.text
    assert (delivery.correlation_id, delivery.causation_id) == (event.correlationid, str(event.id))


def test_the_acknowledgement_names_the_first_reply_time_of_the_sla_policy_when_known():
    ticket = TICKET.model_copy(
        update={"first_reply_due_ms": to_ms(NOW + timedelta(hours=4)), "first_reply_target_seconds": 4 * 3600}
    )

    delivery = decide("acknowledgement", created(), ticket=ticket)

    assert delivery.awaiting is None and delivery.next_attempt_at == NOW
    assert "within 4 hours, by 2026-03-02 13:30 UTC" in delivery.text
    assert "within 4 hours" in delivery.html


def test_the_same_event_always_yields_the_same_delivery_and_message_id():
    event = created()

    first, again = decide("acknowledgement", event), decide("acknowledgement", event)

    assert (first.id, first.message_id) == (again.id, again.message_id)
    assert decide("acknowledgement", created()).message_id != first.message_id


def test_every_customer_mail_threads_on_the_ticket():
    delivery = decide("acknowledgement", created())

    assert delivery.in_reply_to == thread_root("TKT-1") == "<TKT-1@switchboard.local>"
    assert "[TKT-1]" in delivery.subject


def test_the_ticket_language_picks_the_templates_with_english_as_fallback():
    german = decide("acknowledgement", created(), ticket=TICKET.model_copy(update={"language": "de-AT"}))
    french = decide("acknowledgement", created(), ticket=TICKET.model_copy(update={"language": "fr"}))

    assert german.locale == "de" and "Wir haben Ihre Anfrage erhalten" in german.subject
    assert french.locale == "en" and "We received your request" in french.subject


def test_html_escapes_what_the_customer_wrote_and_the_subject_stays_one_line():
    ticket = TICKET.model_copy(update={"subject": "<script>alert(1)</script>\r\nBcc: x@example.com"})

    delivery = decide("acknowledgement", created(), ticket=ticket)

    assert "<script>" not in delivery.html and "&lt;script&gt;" in delivery.html
    assert "\n" not in delivery.subject and "\r" not in delivery.subject
    assert "<script>alert(1)</script>" in delivery.text


def test_a_customer_without_an_email_gets_a_visible_suppression():
    delivery = decide("acknowledgement", created(), ticket=TICKET.model_copy(update={"customer_email": None}))

    assert delivery.state is DeliveryState.SUPPRESSED
    assert delivery.reason == "the customer has no email address"


def test_an_address_that_is_not_valid_is_suppressed_with_the_reason():
    delivery = decide("acknowledgement", created(), ticket=TICKET.model_copy(update={"customer_email": "ann@@example"}))

    assert delivery.state is DeliveryState.SUPPRESSED and delivery.reason.startswith("invalid email address")


def reply(public=True, author=AuthorType.AGENT):
    data = TicketMessageAdded(
        ticket_id="TKT-1", message_id="m1", author_type=author, author_id="ada", public=public,
        body="We refunded you.\n<b>Thanks</b>", added_at=NOW,
    )
    return new_event(data, source="switchboard/intake", subject="TKT-1")


def test_only_public_agent_replies_go_to_the_customer_with_the_body():
    assert rule("agent_reply").matches(reply().data)
    assert not rule("agent_reply").matches(reply(public=False).data)
    assert not rule("agent_reply").matches(reply(author=AuthorType.CUSTOMER).data)

    delivery = decide("agent_reply", reply())

    assert delivery.subject == "[TKT-1] Re: Refund"
    assert delivery.text.startswith("We refunded you.\n<b>Thanks</b>")
    assert "&lt;b&gt;Thanks&lt;/b&gt;" in delivery.html


def test_transactional_messages_ignore_an_opt_out_but_others_respect_it():
    opted_out = Preferences(opt_out=["agent_reply", "csat_survey"])

    assert decide("agent_reply", reply(), preferences=opted_out).state is DeliveryState.PENDING
    survey = decide("csat_survey", solved(), preferences=opted_out)
    assert (survey.state, survey.reason) == (DeliveryState.SUPPRESSED, "the customer opted out of csat_survey")


def solved():
    return new_event(TicketSolved(ticket_id="TKT-1", solved_at=NOW), source="switchboard/intake", subject="TKT-1")


def test_the_csat_survey_is_due_a_day_after_solving_with_five_signed_links():
    delivery = decide("csat_survey", solved())

    assert delivery.state is DeliveryState.PENDING
    assert delivery.next_attempt_at == delivery.scheduled_for == NOW + timedelta(hours=24)
    links = delivery.context["csat_links"]
    assert sorted(links) == ["1", "2", "3", "4", "5"]
    assert all(link.startswith("http://127.0.0.1:8001/v1/tickets/TKT-1/csat?score=") for link in links.values())
    assert links["5"] in delivery.text and "signature=" in links["5"]


def test_without_a_signing_key_the_survey_is_suppressed_with_the_reason():
    delivery = decide("csat_survey", solved(), config=PlanConfig(survey_kinds=SURVEYS))

    assert delivery.state is DeliveryState.SUPPRESSED and "CSAT_SIGNING_KEY" in delivery.reason


def test_the_surveys_are_the_kinds_whose_templates_show_signed_links_whatever_their_name():
    assert SURVEYS == {"csat_survey"}
    assert decide("follow_up", solved(), preferences=Preferences(opt_in=["follow_up"]),
                  config=PlanConfig(survey_kinds=SURVEYS)).state is DeliveryState.PENDING


NPS = TEMPLATES.kinds_using("nps_links")
NPS_CONFIG = replace(CONFIG, survey_kinds=SURVEYS | NPS, nps_kinds=NPS)


def test_the_nps_survey_is_due_a_week_after_solving_with_eleven_signed_links_under_the_customer_in_their_language():
    delivery = decide("nps_survey", solved(), ticket=TICKET.model_copy(update={"language": "de"}), config=NPS_CONFIG)

    assert NPS == {"nps_survey"}
    assert delivery.state is DeliveryState.PENDING and delivery.next_attempt_at == NOW + timedelta(days=7)
    assert (delivery.locale, delivery.subject) == ("de", "Wie wahrscheinlich ist es, dass Sie uns weiterempfehlen?")
    links = delivery.context["nps_links"]
    assert list(links) == [str(score) for score in range(11)]
    survey = delivery.context["survey_id"]
    assert all(link.startswith(f"http://127.0.0.1:8001/v1/customers/c1/nps?survey={survey}&ticket_id=TKT-1&score=")
               for link in links.values())
    assert all(f"{score}: {link}" in delivery.text for score, link in links.items())


def test_an_nps_survey_without_a_signing_key_or_a_customer_id_is_suppressed_with_the_reason():
    unsigned = decide("nps_survey", solved(), config=replace(NPS_CONFIG, csat_signing_key=""))
    anonymous = decide("nps_survey", solved(), ticket=TICKET.model_copy(update={"customer_id": None}), config=NPS_CONFIG)

    assert (unsigned.state, unsigned.reason) == (
        DeliveryState.SUPPRESSED, "CSAT_SIGNING_KEY is not set: the survey link cannot be signed"
    )
    assert (anonymous.state, anonymous.reason) == (
        DeliveryState.SUPPRESSED, "the customer has no id: an NPS survey link is under the customer"
    )


def test_the_follow_up_goes_only_to_customers_who_opted_in():
    assert decide("follow_up", solved()).reason == "the customer has not opted in to follow_up"
    wanted = decide("follow_up", solved(), preferences=Preferences(opt_in=["follow_up"]))
    assert wanted.state is DeliveryState.PENDING and wanted.next_attempt_at == NOW + timedelta(days=7)


def test_non_urgent_messages_wait_for_the_end_of_quiet_hours():
    quiet = Preferences(quiet_hours=QuietHours(start=time(9), end=time(18), timezone="UTC"))
    solved_now = rule("csat_survey").model_copy(update={"delay_seconds": 0})

    recipient = resolve(Audience.CUSTOMER, solved(), TICKET, contacts={}, preferences=quiet, config=CONFIG)
    survey = plan(solved_now, recipient, solved(), TICKET, quiet, render=TEMPLATES.render, now=NOW, config=CONFIG)
    urgent = decide("agent_reply", reply(), preferences=quiet)

    assert survey.next_attempt_at == datetime(2026, 3, 2, 18, tzinfo=UTC)
    assert survey.reason.startswith("quiet hours until")
    assert urgent.next_attempt_at == NOW


def assigned(agent="ada"):
    data = TicketAssigned(ticket_id="TKT-1", agent_id=agent, reason="billing level 3", assigned_at=NOW)
    return new_event(data, source="switchboard/routing", subject="TKT-1")


def test_the_assigned_agent_is_told_on_the_channel_they_chose():
    contacts = {"ada": AgentContact(channel=DeliveryChannel.WEBHOOK, webhook_url="https://hooks.example/ada", name="Ada")}

    delivery = decide("assignment", assigned(), contacts=contacts, audience=Audience.AGENT)

    assert delivery.id.endswith(":agent:assignment")
    assert (delivery.channel, delivery.recipient, delivery.recipient_id) == (
        DeliveryChannel.WEBHOOK, "https://hooks.example/ada", "ada"
    )
    assert "Hi Ada," in delivery.text and "billing level 3" in delivery.text


def test_an_agent_without_contact_details_is_a_visible_suppression():
    delivery = decide("assignment", assigned("bob"), audience=Audience.AGENT)

    assert (delivery.state, delivery.reason) == (DeliveryState.SUPPRESSED, "no contact details for agent bob")


def test_an_agent_contact_must_have_the_address_of_its_channel():
    with pytest.raises(ValueError, match="no sms address"):
        AgentContact(channel=DeliveryChannel.SMS)
    with pytest.raises(ValueError, match="invalid phone number"):
        AgentContact(channel=DeliveryChannel.SMS, phone="12")


def breached():
    data = SlaBreached(
        ticket_id="TKT-1", metric="first_reply", target_seconds=3600, due_at=NOW, breached_at=NOW
    )
    return new_event(data, source="switchboard/sla", subject="TKT-1")


def test_a_breach_goes_to_the_team_webhook_and_says_so_when_supervisors_have_none():
    team = decide("sla_breached", breached(), audience=Audience.TEAM)
    supervisors = decide("sla_breached", breached(), audience=Audience.SUPERVISORS)

    assert (team.channel, team.recipient, team.recipient_role) == (
        DeliveryChannel.WEBHOOK, "http://hooks.example/team", RecipientRole.TEAM
    )
    assert "SLA breached on TKT-1" in team.subject
    assert (supervisors.state, supervisors.reason) == (DeliveryState.SUPPRESSED, "SUPERVISORS_WEBHOOK_URL is not set")


def test_the_assignee_for_an_sla_warning_is_the_one_notify_last_heard_of():
    ticket = TICKET.model_copy(update={"assignee_id": "ada"})
    contacts = {"ada": AgentContact(email="ada@example.com")}

    recipient = resolve(Audience.ASSIGNEE, breached(), ticket, contacts=contacts, preferences=None, config=CONFIG)

    assert (recipient.role, recipient.address, recipient.id) == (RecipientRole.AGENT, "ada@example.com", "ada")


def test_an_event_from_days_ago_owes_only_a_suppression():
    old = created().model_copy(update={"time": NOW - timedelta(days=4)})

    delivery = decide("acknowledgement", old)

    assert (delivery.state, delivery.reason) == (DeliveryState.SUPPRESSED, "the event is older than 3 days")


def test_a_held_acknowledgement_is_released_with_the_reply_time_in_the_customers_timezone():
    berlin = Preferences(quiet_hours=QuietHours(start=time(22), end=time(7), timezone="Europe/Berlin"))
    held = decide("acknowledgement", created(), preferences=berlin)
    ticket = TICKET.model_copy(
        update={"first_reply_due_ms": to_ms(NOW + timedelta(hours=4)), "first_reply_target_seconds": 4 * 3600}
    )

    delivery = released(held, ticket, render=TEMPLATES.render, now=NOW + timedelta(seconds=1))

    assert "within 4 hours, by 2026-03-02 14:30 CET" in delivery.text, "the zone it was first rendered for"
    assert (delivery.awaiting, delivery.reason) == (None, None)
    assert delivery.next_attempt_at == NOW + timedelta(seconds=1) and delivery.scheduled_for == NOW
    assert (delivery.id, delivery.message_id) == (held.id, held.message_id)


def survey_for(ticket_id: str):
    ticket = TICKET.model_copy(update={"ticket_id": ticket_id})
    event = new_event(TicketSolved(ticket_id=ticket_id, solved_at=NOW), source="switchboard/intake", subject=ticket_id)
    survey_now = rule("csat_survey").model_copy(update={"delay_seconds": 0})
    recipient = resolve(Audience.CUSTOMER, event, ticket, contacts={}, preferences=None, config=CONFIG)
    return plan(survey_now, recipient, event, ticket, None, render=TEMPLATES.render, now=NOW, config=CONFIG)


WINDOW_END = datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_a_digest_carries_each_held_message_whole_and_goes_when_the_window_ends():
    first, second = survey_for("TKT-1"), survey_for("TKT-2")
    key = digest_key(RecipientRole.CUSTOMER, "ann@example.com", 7)

    digest = fold_into_digest(None, first, key=key, window_end=WINDOW_END, quiet_hours=None, render=TEMPLATES.render, now=NOW)
    digest = fold_into_digest(digest, second, key=key, window_end=WINDOW_END, quiet_hours=None, render=TEMPLATES.render, now=NOW)

    assert (digest.id, digest.kind, digest.ticket_id, digest.recipient) == (key, "digest", "TKT-1", "ann@example.com")
    assert digest.next_attempt_at == WINDOW_END and digest.reason == "digest of 2 held messages"
    for survey in (first, second):
        assert survey.context["csat_links"]["5"] in digest.text, "the survey's links survive the digest"
        assert survey.subject in digest.text
    assert "TKT-2" in digest.html


def test_a_digest_to_a_customer_waits_for_the_end_of_their_quiet_hours():
    evening = QuietHours(start=time(9, 45), end=time(11), timezone="UTC")

    digest = fold_into_digest(
        None, survey_for("TKT-1"), key="digest:k", window_end=WINDOW_END, quiet_hours=evening,
        render=TEMPLATES.render, now=NOW,
    )

    assert digest.next_attempt_at == datetime(2026, 3, 2, 11, tzinfo=UTC)
