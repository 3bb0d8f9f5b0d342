"""The NPS survey's pages, each self-contained (inline style, no script, nothing fetched from elsewhere).

The mailed link shows the question with the chosen score preselected; only the form's POST answers. A
mail security scanner that fetches every link of a mail therefore answers nothing: it would otherwise
answer the survey with the first link it fetched, and this survey takes one answer only.
"""

from html import escape
from urllib.parse import urlencode

COMMENT_MAX_CHARS = 2000

HEADERS = {
    # Nothing but this page's own inline style; the form posts only back here; never in a frame.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the address carries the link's signature
    "Cache-Control": "no-store",
}

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


def question(*, survey_id: str, ticket_id: str, expires: int, signature: str, score: int) -> str:
    """The form the mailed link shows: `score` preselected, a comment box, and a button that POSTs the
    answer form-encoded to the same path with the link's signed parameters."""
    signed = urlencode({"survey": survey_id, "ticket_id": ticket_id, "expires": expires, "signature": signature})
    scores = "".join(
        f"<label class='score'><input type='radio' name='score' value='{value}' required"
        f"{' checked' if value == score else ''}><span>{value}</span></label>"
        for value in range(11)
    )
    return _page(
        "How likely are you to recommend us?",
        f"<h1>How likely are you to recommend us?</h1>"
        f"<form method='post' action='nps?{escape(signed)}'>"
        f"<fieldset><legend>0 is not at all likely, 10 extremely likely.</legend>{scores}</fieldset>"
        f"<div class='ends'><span>Not at all likely</span><span>Extremely likely</span></div>"
        f"<p><label for='comment'>Anything you would like to tell us? (optional)</label></p>"
        f"<textarea id='comment' name='comment' maxlength='{COMMENT_MAX_CHARS}'></textarea>"
        f"<button type='submit'>Send my answer</button></form>",
    )


def thanks(score: int) -> str:
    return _page("Thank you", f"<h1>Thank you for your answer.</h1><p>You answered {score} out of 10.</p>")


def answered_already() -> str:
    return _page(
        "Answered already",
        "<h1>This survey has been answered already.</h1><p>Thank you: an answer cannot be changed.</p>",
    )
