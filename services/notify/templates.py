"""Message templates, `<kind>.<locale>.<part>.j2` (part: subject, txt, html), compiled at start.

Every kind the rules name (and `digest`) needs its English templates; any other locale present
must have all three parts. A message is rendered in the recipient's language (`pt-BR`, then
`pt`), falling back to English. HTML is autoescaped; subject and text are not. A template that
is missing or does not compile stops the service at start-up with its name and the reason.
"""

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateError, meta, select_autoescape

from services.notify.domain import DEFAULT_LOCALE, DIGEST_KIND, DeliveryKind, RenderedEmail, describe_duration

TEMPLATES_DIRECTORY = Path(__file__).parent / "templates"
PARTS = ("subject", "txt", "html")
_NAME = re.compile(r"^(?P<kind>[a-z][a-z0-9_]*)\.(?P<locale>[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*)\.(?P<part>subject|txt|html)\.j2$")


class UnusableTemplate(RuntimeError):
    """A template is missing or does not compile; the message names it and says why."""


class Templates:
    def __init__(self, directory: Path = TEMPLATES_DIRECTORY, *, kinds: Iterable[str] | None = None) -> None:
        environment = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
            keep_trailing_newline=True,
        )
        environment.filters["duration"] = describe_duration
        wanted = {str(kind) for kind in (kinds if kinds is not None else DeliveryKind)} | {DIGEST_KIND}
        locales: dict[str, set[str]] = {kind: {DEFAULT_LOCALE} for kind in wanted}
        for path in sorted(directory.glob("*.j2")) if directory.is_dir() else ():
            if (match := _NAME.match(path.name)) and match["kind"] in wanted:
                locales[match["kind"]].add(match["locale"])
        self._templates: dict[tuple[str, str, str], Template] = {}
        variables: dict[str, set[str]] = {kind: set() for kind in locales}
        for kind, kind_locales in sorted(locales.items()):
            for locale in sorted(kind_locales):
                for part in PARTS:
                    name = f"{kind}.{locale}.{part}.j2"
                    try:
                        template = environment.get_template(name)
                        # Each render copies the template's globals into a new context; as Jinja keeps them (a
                        # ChainMap in front of the environment's) that copy was a third of a render's time.
                        # Nothing adds globals after start, so each template keeps a plain dict of them.
                        template.globals = dict(template.globals)
                        self._templates[kind, locale, part] = template
                        source = environment.loader.get_source(environment, name)[0]
                        variables[kind] |= meta.find_undeclared_variables(environment.parse(source))
                    except TemplateError as error:
                        raise UnusableTemplate(f"template {name}: {type(error).__name__}: {error}") from error
        self.locales = {kind: frozenset(found) for kind, found in locales.items()}
        self._variables = {kind: frozenset(names) for kind, names in variables.items()}

    def kinds_using(self, variable: str) -> frozenset[str]:
        """The kinds whose templates name `variable`: e.g. the surveys, which need signed `csat_links`."""
        return frozenset(kind for kind, names in self._variables.items() if variable in names)

    def check(self, sample_context: Mapping[str, object]) -> None:
        """Render every template once; one that fails (an unknown variable, a bad filter) is refused by name."""
        for (kind, locale, part), template in sorted(self._templates.items()):
            try:
                template.render(sample_context)
            except Exception as error:
                raise UnusableTemplate(f"template {kind}.{locale}.{part}.j2: {type(error).__name__}: {error}") from error

    def locale_for(self, kind: str, wanted: str | None) -> str:
        """The most specific locale with templates: `pt-BR`, then `pt`, then English."""
        available = self.locales.get(kind, frozenset())
        tag = (wanted or "").replace("_", "-")
        parts = tag.split("-") if tag else []
        while parts:
            for candidate in available:
                if candidate.lower() == "-".join(parts).lower():
                    return candidate
            parts.pop()
        return DEFAULT_LOCALE

    def render(self, kind: str, locale: str, context: Mapping[str, object]) -> RenderedEmail:
        used = self.locale_for(kind, locale)
        subject, text, html = (self._templates[kind, used, part].render(context) for part in PARTS)
        # A subject is one header line: whatever whitespace the customer typed, it cannot start another header.
        return RenderedEmail(subject=" ".join(subject.split()), text=text, html=html, locale=used)
