"""Intake's triage of long messages: reading language and mood from the opening vs from the whole text.

    .venv/bin/python -m benchmarks.triage [--sizes 100,1000,10000,100000] [--rounds 3]

For each body size, a ticket is triaged with the shipped rules and languages as intake does it (language
and sentiment from the first `READ_FOR_TONE` characters, keywords in the whole text). The baseline, timed
beside it in every round, is what triage did before: language and sentiment from the whole text. It prints
CPU-ms per ticket of each and the ratio; it asserts no speed.
"""

import argparse
import statistics
import sys
import time

from services.intake.triage import (
    RULES_FILE,
    Triage,
    TriageInput,
    build_english_sentiment,
    build_language_detector,
    load_rules,
)
from shared.events import Channel

PARAGRAPH = (
    "I was charged twice for my order last week and the second payment has still not come back. "
    "The invoice number is on the attached page, and I paid by card as usual.\n"
)


def cpu_ms(work, repeats: int) -> float:
    """CPU per call, in milliseconds."""
    started = time.process_time()
    for _ in range(repeats):
        work()
    return (time.process_time() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000,100000", help="body lengths in characters")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rules = load_rules(RULES_FILE)
    detect, english = build_language_detector(rules.languages), build_english_sentiment()
    triage = Triage(rules, detect, english)
    whole_text = Triage(rules, detect, english, read_for_tone=sys.maxsize)
    for size in (int(size) for size in args.sizes.split(",")):
        body = (PARAGRAPH * (size // len(PARAGRAPH) + 1))[:size]
        given = TriageInput(subject="Charged twice", body=body, channel=Channel.EMAIL)
        repeats = max(1, 20_000 // size)
        for warming in (whole_text, triage):  # neither pays for a first call
            warming.triage(given)
        ratios = []
        for _ in range(args.rounds):
            baseline = cpu_ms(lambda: whole_text.triage(given), repeats)
            opening = cpu_ms(lambda: triage.triage(given), repeats)
            ratios.append(opening / baseline)
        print(
            f"body {size:>7,} characters: from the opening {opening:9.2f} CPU-ms a ticket; "
            f"the whole text {baseline:9.2f}; ratio {statistics.median(ratios):.3f}x (median of {args.rounds})"
        )


if __name__ == "__main__":
    main()
