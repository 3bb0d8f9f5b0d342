"""Email templates, `<kind>.<locale>.<part>.j2`, compiled when the service starts so a broken one stops it."""

from collections.abc import Iterable, Mapping
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateError, select_autoescape

from services.notify.domain import DEFAULT_LOCALE, DeliveryKind, RenderedEmail

TEMPLATES_DIRECTORY = Path(__file__).parent / "templates"
PARTS = ("subject", "txt", "html")


class UnusableTemplate(RuntimeError):
    """A template is missing or does not compile; the message names it and says why."""


class Templates:
    def __init__(
        self,
        directory: Path = TEMPLATES_DIRECTORY,
        *,
        kinds: Iterable[DeliveryKind] = tuple(DeliveryKind),
        locales: Iterable[str] = (DEFAULT_LOCALE,),
    ) -> None:
        environment = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
            keep_trailing_newline=True,
        )
        self._templates: dict[tuple[DeliveryKind, str, str], Template] = {}
        for kind in kinds:
            for locale in locales:
                for part in PARTS:
                    name = f"{kind}.{locale}.{part}.j2"
                    try:
                        self._templates[kind, locale, part] = environment.get_template(name)
                    except TemplateError as error:
                        raise UnusableTemplate(f"email template {name}: {type(error).__name__}: {error}") from error

    def render(self, kind: DeliveryKind, locale: str, context: Mapping[str, object]) -> RenderedEmail:
        subject, text, html = (self._templates[kind, locale, part].render(context) for part in PARTS)
        # A subject is one header line: whatever whitespace the customer typed, it cannot start another header.
        return RenderedEmail(subject=" ".join(subject.split()), text=text, html=html)
