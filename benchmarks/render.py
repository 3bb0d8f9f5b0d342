"""Notify's rendering: each message's three parts (subject, text, HTML) from its compiled templates.

    .venv/bin/python -m benchmarks.render [--messages 2000] [--rounds 5]

Every shipped kind is rendered in English with the sample context notify checks its templates with
at start, once by the templates as notify keeps them and once with Jinja's own globals (a ChainMap
in front of the environment's, which each render copies into its context): the baseline. The two
alternate every round, so load drift on a shared machine hits both alike. It first checks that both
render every kind alike, then prints microseconds and CPU-ms per message for each, and the ratio; it
asserts no speed.
"""

import argparse
import statistics
import time

from services.notify.planner import SAMPLE_CONTEXT
from services.notify.rules import load_rules
from services.notify.templates import Templates


def per_message(templates: Templates, kinds: list[str], messages: int) -> tuple[float, float]:
    """Wall and CPU time per message, in microseconds and milliseconds."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for number in range(messages):
        templates.render(kinds[number % len(kinds)], "en", SAMPLE_CONTEXT)
    return (time.perf_counter() - started) / messages * 1e6, (time.process_time() - cpu_started) / messages * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    kinds = sorted(load_rules().kinds)
    as_kept = Templates(kinds=kinds)
    as_jinja_keeps = Templates(kinds=kinds)
    for template in as_jinja_keeps._templates.values():
        template.globals = template.environment.make_globals(None)
    for kind in kinds:
        assert as_kept.render(kind, "en", SAMPLE_CONTEXT) == as_jinja_keeps.render(kind, "en", SAMPLE_CONTEXT)

    ratios = []
    print(f"{len(kinds)} kinds, {args.messages} messages a round")
    for number in range(1, args.rounds + 1):
        baseline_us, baseline_cpu = per_message(as_jinja_keeps, kinds, args.messages)
        kept_us, kept_cpu = per_message(as_kept, kinds, args.messages)
        ratios.append(kept_cpu / baseline_cpu)
        print(
            f"round {number}: as notify keeps them {kept_us:.1f} us ({kept_cpu:.4f} CPU-ms) a message; "
            f"Jinja's globals {baseline_us:.1f} us ({baseline_cpu:.4f} CPU-ms); CPU ratio {ratios[-1]:.2f}x"
        )
    print(f"median CPU ratio, as kept / Jinja's globals: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
