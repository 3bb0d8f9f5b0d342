"""Triage: language, sentiment, category, skills, tags and priority, each with the reason it was chosen.

The rules live in a YAML file (`TRIAGE_RULES_PATH`, default `triage_rules.yaml` beside this
module), checked when the service starts: a file that does not parse or does not fit the schema
stops intake with the file, the line and the reason. Evaluation (`Triage.triage`) is pure: the
language detector and the English sentiment scorer are passed in, built once at start.

VADER scores English only; for other languages the rules carry a small lexicon of weighted words.
Whatever the caller supplies (priority, required skills, language, category, tags) wins, and the
reasons say so.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.intake.domain import Triaged, normalize_tags
from shared import rules_file
from shared.events import SKILL_PATTERN, Channel, CustomerTier, Priority

RULES_FILE = Path(__file__).parent / "triage_rules.yaml"

LanguageDetector = Callable[[str], str | None]
SentimentScorer = Callable[[str], float]

READ_FOR_TONE = 1000
"""Language and sentiment are read from the text's opening, at most this many characters (cut at a word's
end): VADER's time grows with the square of the text (a body of 100,000 characters, the most a ticket may
have, held intake's event loop 6-18 s on a 2-core machine), and a message's opening says its language and
mood."""


class Keywords(BaseModel):
    """Words or phrases, matched case-insensitively on word boundaries in the subject and body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    any: list[str] = Field(min_length=1)

    @field_validator("any")
    @classmethod
    def _not_blank(cls, words: list[str]) -> list[str]:
        if any(not word.strip() for word in words):
            raise ValueError("keywords cannot be blank")
        return [word.strip().lower() for word in words]


class CategoryRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SKILL_PATTERN)
    keywords: Keywords
    skills: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @field_validator("skills")
    @classmethod
    def _skills(cls, skills: list[str]) -> list[str]:
        for skill in skills:
            if not re.match(SKILL_PATTERN, skill):
                raise ValueError(f"'{skill}' is not a skill name ({SKILL_PATTERN})")
        return skills


class Condition(BaseModel):
    """Every condition given must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: list[CustomerTier] | None = None
    channel: list[Channel] | None = None
    category: list[str] | None = None
    language: list[str] | None = None
    sentiment_below: float | None = Field(default=None, ge=-1, le=1)
    keywords: Keywords | None = None

    @field_validator("tier", "channel", "category", "language", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something(self) -> "Condition":
        if not self.model_fields_set:
            raise ValueError("a condition needs at least one of: tier, channel, category, language, sentiment_below, keywords")
        return self


class PriorityRule(BaseModel):
    """When the condition holds, the priority is at least `priority`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: Condition
    priority: Priority
    reason: str = Field(min_length=1, max_length=200)


class SentimentRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lexicon: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="language → word → weight (−1..1), for languages VADER cannot score."
    )

    @field_validator("lexicon")
    @classmethod
    def _weights(cls, lexicon: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for language, words in lexicon.items():
            for word, weight in words.items():
                if not -1 <= weight <= 1:
                    raise ValueError(f"{language}.{word}: weight {weight} is not in −1..1")
        return {language: {w.lower(): v for w, v in words.items()} for language, words in lexicon.items()}


class TriageRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, le=1)
    languages: list[str] = Field(min_length=1, description="ISO 639-1 codes the detector chooses among.")
    default_priority: Priority = Priority.NORMAL
    sentiment: SentimentRules = Field(default_factory=SentimentRules)
    categories: list[CategoryRule] = Field(default_factory=list)
    priority: list[PriorityRule] = Field(default_factory=list)

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, languages: list[str]) -> list[str]:
        from lingua import IsoCode639_1

        for code in languages:
            try:
                IsoCode639_1.from_str(code)
            except ValueError:
                raise ValueError(f"'{code}' is not an ISO 639-1 language code lingua knows") from None
        return [code.lower() for code in languages]

    @model_validator(mode="after")
    def _unique_categories(self) -> "TriageRules":
        names = [category.name for category in self.categories]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"categories repeated: {', '.join(repeated)}")
        return self


def load_rules(path: Path) -> TriageRules:
    """The rules at `path`; a wrong file is refused with its line (`shared.rules_file.RulesFileError`)."""
    return rules_file.load(TriageRules, path)


# --- evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TriageInput:
    subject: str
    body: str
    channel: Channel
    tier: CustomerTier | None = None
    priority: Priority | None = None
    required_skills: Sequence[str] = ()
    language: str | None = None
    category: str | None = None
    tags: Sequence[str] = ()


class Triage:
    def __init__(
        self,
        rules: TriageRules,
        detect_language: LanguageDetector,
        english_sentiment: SentimentScorer,
        *,
        read_for_tone: int = READ_FOR_TONE,
    ) -> None:
        self.rules = rules
        self._detect = detect_language
        self._english = english_sentiment
        self._read_for_tone = read_for_tone
        self._patterns: dict[tuple[str, ...], re.Pattern] = {}

    def triage(self, given: TriageInput) -> Triaged:
        text = f"{given.subject}\n{given.body}"
        opening = _opening(text, self._read_for_tone)
        read = "" if opening == text else f", from the first {len(opening):,} characters"
        reasons: list[str] = []

        if given.language:
            language = given.language
            reasons.append(f"language {language}: set by the caller")
        else:
            language = self._detect(opening)
            reasons.append(f"language {language}: detected{read}" if language else "language unknown: not detected")

        sentiment, why = self._sentiment(opening, language)
        if sentiment is not None:
            reasons.append(f"sentiment {sentiment:+.2f}: {why}{read}")

        category_rule = None
        if given.category:
            category = given.category
            category_rule = next((rule for rule in self.rules.categories if rule.name == category), None)
            reasons.append(f"category {category}: set by the caller")
        else:
            category = None
            for rule in self.rules.categories:
                if hit := self._first_hit(rule.keywords, text):
                    category, category_rule = rule.name, rule
                    reasons.append(f"category {category}: keyword '{hit}'")
                    break

        if given.required_skills:
            skills = sorted(set(given.required_skills))
            reasons.append(f"required skills {', '.join(skills)}: set by the caller")
        else:
            skills = sorted(set(category_rule.skills)) if category_rule else []
            if skills:
                reasons.append(f"required skills {', '.join(skills)}: category {category}")

        tags = normalize_tags([*given.tags, *(category_rule.tags if category_rule else [])])

        if given.priority is not None:
            priority = given.priority
            reasons.append(f"priority {priority}: set by the caller")
        else:
            priority = self.rules.default_priority
            raised: list[str] = []
            for rule in self.rules.priority:
                hit = self._holds(rule.when, given, language, sentiment, category, text)
                if hit is None:
                    continue
                if rule.priority.rank > priority.rank:
                    priority = rule.priority
                raised.append(f"priority {rule.priority}: {rule.reason}{hit}")
            reasons.extend(raised or [f"priority {priority}: default"])

        return Triaged(
            priority=priority,
            required_skills=skills,
            language=language,
            sentiment=sentiment,
            category=category,
            tags=tags,
            reasons=reasons,
        )

    def _sentiment(self, text: str, language: str | None) -> tuple[float | None, str]:
        if language == "en":
            return round(max(-1.0, min(1.0, self._english(text))), 2), "VADER (English)"
        lexicon = self.rules.sentiment.lexicon.get(language or "", {})
        if not lexicon:
            return None, ""
        hits = [(word, weight) for word, weight in lexicon.items() if self._matches([word], text)]
        if not hits:
            return 0.0, f"no {language} sentiment words"
        score = round(max(-1.0, min(1.0, sum(weight for _, weight in hits))), 2)
        return score, f"{language} words " + ", ".join(f"'{word}'" for word, _ in hits)

    def _holds(
        self,
        when: Condition,
        given: TriageInput,
        language: str | None,
        sentiment: float | None,
        category: str | None,
        text: str,
    ) -> str | None:
        """None when the condition fails, else what to add to the reason (the keyword that matched)."""
        if when.tier is not None and given.tier not in when.tier:
            return None
        if when.channel is not None and given.channel not in when.channel:
            return None
        if when.category is not None and category not in when.category:
            return None
        if when.language is not None and language not in when.language:
            return None
        if when.sentiment_below is not None and (sentiment is None or sentiment >= when.sentiment_below):
            return None
        if when.keywords is not None:
            hit = self._first_hit(when.keywords, text)
            return None if hit is None else f" ('{hit}')"
        return ""

    def _first_hit(self, keywords: Keywords, text: str) -> str | None:
        """The first of the keywords, in their order, that the text holds. One search for any of them first:
        most lists match nothing, and that answer then costs one pass over the text, not one per word."""
        if not self._matches(keywords.any, text):
            return None
        return next((word for word in keywords.any if self._matches([word], text)), None)

    def _matches(self, words: list[str], text: str) -> bool:
        """Whether any of `words` is in `text` as a whole word (or phrase), whatever its case."""
        key = tuple(words)
        pattern = self._patterns.get(key)
        if pattern is None:
            alternatives = "|".join(re.escape(word) for word in words)
            pattern = self._patterns[key] = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        return pattern.search(text) is not None


def _opening(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters without the word the limit cuts through."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    end = max(head.rfind(" "), head.rfind("\n"))
    return head[:end] if end > 0 else head[:limit]


def build_language_detector(languages: Sequence[str]) -> LanguageDetector:
    """Once per process, for the configured languages only (all 75 take ~9 s to load; a few, ~1 s)."""
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    chosen = [Language.from_iso_code_639_1(IsoCode639_1.from_str(code)) for code in languages]
    if len(chosen) == 1:
        only = chosen[0].iso_code_639_1.name.lower()
        return lambda text: only
    detector = LanguageDetectorBuilder.from_languages(*chosen).with_preloaded_language_models().build()

    def detect(text: str) -> str | None:
        found = detector.detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found else None

    return detect


def build_english_sentiment() -> SentimentScorer:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda text: analyzer.polarity_scores(text)["compound"]


def build_triage(path: Path) -> Triage:
    rules = load_rules(path)
    return Triage(rules, build_language_detector(rules.languages), build_english_sentiment())
