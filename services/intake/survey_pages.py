"""The survey links' pages (CSAT and NPS), each self-contained (inline style, no script, nothing fetched
from elsewhere).

A mailed link shows its survey's question with the link's score preselected; only the form's POST answers.
A mail security scanner that fetches every link of a mail therefore answers nothing: it would otherwise
answer with the first link it fetched (NPS takes that one answer only; CSAT would report a rating nobody
gave).
"""

from dataclasses import dataclass
from html import escape
from urllib.parse import urlencode

COMMENT_MAX_CHARS = 2000

HEADERS = {
    # Nothing but this page's own inline style; the form posts only back here; never in a frame.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the address carries the link's signature
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Survey:
    """What one survey's page says, and where its form posts."""

    question: str
    scores: range
    scale: str  # what the lowest and the highest score mean, in a sentence
    ends: tuple[str, str]  # the lowest and the highest score's labels
    action: str  # the route's last path segment: the form posts back to the link's own path

    @property
    def highest(self) -> int:
        return self.scores[-1]


NPS = Survey(
    question="How likely are you to recommend us?",
    scores=range(11),
    scale="0 is not at all likely, 10 extremely likely.",
    ends=("Not at all likely", "Extremely likely"),
    action="nps",
)
CSAT = Survey(
    question="How satisfied are you with the help you got?",
    scores=range(1, 6),
    scale="1 is very unsatisfied, 5 very satisfied.",
    ends=("Very unsatisfied", "Very satisfied"),
    action="csat",
)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "fieldset{border:0;padding:0;margin:1rem 0;display:flex;flex-wrap:wrap;gap:.25rem}"
    "legend{margin-bottom:.5rem}"
    ".score input{position:absolute;opacity:0}"
    ".score span{display:inline-block;min-width:2.2rem;padding:.5rem 0;text-align:center;border:1px solid #888;"
    "border-radius:.3rem;cursor:pointer}"
    ".score input:checked+span{background:#1a5fb4;color:#fff;border-color:#1a5fb4}"
    ".score input:focus-visible+span{outline:2px solid #1a5fb4;outline-offset:2px}"
    ".ends{display:flex;justify-content:space-between;font-size:.85rem;color:#555}"
    "textarea{width:100%;box-sizing:border-box;min-height:6rem;font:inherit}"
    "button{margin-top:1rem;padding:.6rem 1.5rem;font:inherit;background:#1a5fb4;color:#fff;border:0;border-radius:.3rem}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def question(survey: Survey, *, signed: dict[str, str | int], score: int, about: str | None = None) -> str:
    """The form a mailed link shows: `score` preselected, a comment box, and a button that POSTs the
    answer form-encoded to the same path with the link's `signed` parameters (all but its score).
    `about` says what is asked about (a ticket, say)."""
    scores = "".join(
        f"<label class='score'><input type='radio' name='score' value='{value}' required"
        f"{' checked' if value == score else ''}><span>{value}</span></label>"
        for value in survey.scores
    )
    low, high = survey.ends
    return _page(
        survey.question,
        f"<h1>{escape(survey.question)}</h1>"
        + (f"<p>{escape(about)}</p>" if about else "")
        + f"<form method='post' action='{escape(survey.action)}?{escape(urlencode(signed))}'>"
        f"<fieldset><legend>{escape(survey.scale)}</legend>{scores}</fieldset>"
        f"<div class='ends'><span>{escape(low)}</span><span>{escape(high)}</span></div>"
        f"<p><label for='comment'>Anything you would like to tell us? (optional)</label></p>"
        f"<textarea id='comment' name='comment' maxlength='{COMMENT_MAX_CHARS}'></textarea>"
        f"<button type='submit'>Send my answer</button></form>",
    )


def thanks(survey: Survey, score: int) -> str:
    return _page(
        "Thank you", f"<h1>Thank you for your answer.</h1><p>You answered {score} out of {survey.highest}.</p>"
    )


def answered_already() -> str:
    return _page(
        "Answered already",
        "<h1>This survey has been answered already.</h1><p>Thank you: an answer cannot be changed.</p>",
    )


def link_refused(reason: str) -> str:
    """A link that is expired, altered or not ours, or surveys that are switched off, and why."""
    return _page(
        "Link not valid",
        f"<h1>This survey link cannot be used.</h1><p>{escape(reason)}.</p>"
        "<p>Nothing was recorded. If you wanted to answer, reply to the mail it came in.</p>",
    )


def not_taken(reason: str) -> str:
    """A posted answer the survey cannot take (its ticket is not solved, say), and why."""
    return _page("Not recorded", f"<h1>Your answer was not recorded.</h1><p>{escape(reason)}</p>")
