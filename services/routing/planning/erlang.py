"""Erlang C: how many agents answer a share of tickets within a target wait. Pure.

Arrivals are Poisson, handle times exponential, nobody abandons, and a waiting ticket is served
in order (M/M/N). With traffic A = arrivals per second × handle time (in Erlangs) and N agents:

- Erlang B by its recursion, B(0) = 1, B(n) = A·B(n-1) / (n + A·B(n-1)): no factorials or powers,
  so it stays exact for thousands of agents where the textbook formula overflows;
- Erlang C (the probability a ticket waits) from it: C = N·B / (N − A·(1 − B)), for N > A;
- service level: P(wait ≤ t) = 1 − C·exp(−(N − A)·t / handle time);
- mean wait (ASA): C·handle time / (N − A).

Concurrency (chat, where an agent holds several tickets at once): each agent is `concurrency`
servers (slots). The handle time recorded (assigned → solved) was measured while the agent held
others, so it already carries the slowdown of sharing attention; the slots are then served as
M/M/(N·k) and the agents needed are the slots rounded up to whole agents. It assumes an agent's
slots are independent, which overstates what a busy agent gets done when chats need replies at
the same moment; use the concurrency agents actually sustain, not their configured maximum.
"""

import math
from dataclasses import dataclass

MAX_TRAFFIC = 20_000.0
"""Erlangs one interval may offer (the search for the agents needed grows with it)."""


class TooMuchTraffic(ValueError):
    pass


def erlang_b(servers: int, traffic: float) -> float:
    """The probability that all `servers` are busy in a loss system offered `traffic` Erlangs."""
    blocking = 1.0
    for n in range(1, servers + 1):
        blocking = traffic * blocking / (n + traffic * blocking)
    return blocking


def erlang_c(servers: int, traffic: float) -> float:
    """The probability that a ticket waits; 1 when `servers` cannot keep up (N ≤ A)."""
    if traffic <= 0:
        return 0.0
    if servers <= traffic:
        return 1.0
    return _waiting(servers, traffic, erlang_b(servers, traffic))


def _waiting(servers: int, traffic: float, blocking: float) -> float:
    """Erlang C from Erlang B for the same servers and traffic."""
    return servers * blocking / (servers - traffic * (1 - blocking))


def service_level(servers: int, traffic: float, handle_seconds: float, target_seconds: float) -> float:
    """The share of tickets answered within `target_seconds`."""
    if traffic <= 0:
        return 1.0
    if servers <= traffic:
        return 0.0
    return 1 - erlang_c(servers, traffic) * math.exp(-(servers - traffic) * target_seconds / handle_seconds)


def mean_wait(servers: int, traffic: float, handle_seconds: float) -> float:
    """The mean wait of all tickets (those who wait and those who do not); infinite when N ≤ A."""
    if traffic <= 0:
        return 0.0
    if servers <= traffic:
        return math.inf
    return erlang_c(servers, traffic) * handle_seconds / (servers - traffic)


@dataclass(frozen=True)
class Staffing:
    arrivals: float
    aht_seconds: float
    traffic: float
    agents: int
    """Agents needed on the floor (before shrinkage)."""
    scheduled: int
    """Agents to schedule: `agents` / (1 − shrinkage), rounded up."""
    service_level: float
    mean_wait_seconds: float
    occupancy: float
    probability_of_waiting: float


def agents_needed(
    arrivals: float, interval_seconds: float, aht_seconds: float, *, target_seconds: float, service_level_goal: float,
    max_occupancy: float = 1.0, shrinkage: float = 0.0, concurrency: int = 1,
) -> Staffing:
    """The fewest agents with which `service_level_goal` of tickets wait at most `target_seconds`, and whose
    occupancy (traffic per slot) stays at most `max_occupancy`; then grossed up for shrinkage."""
    rate = arrivals / interval_seconds
    traffic = rate * aht_seconds
    if traffic <= 0:
        return Staffing(arrivals, aht_seconds, 0.0, 0, 0, 1.0, 0.0, 0.0, 0.0)
    if traffic > MAX_TRAFFIC:
        raise TooMuchTraffic(f"{traffic:.0f} Erlangs in one interval, over the limit of {MAX_TRAFFIC:.0f}")
    agents = max(1, math.floor(traffic / concurrency))
    slots = agents * concurrency
    blocking = erlang_b(slots, traffic)  # then carried up one server at a time: the search stays linear
    while not (
        slots > traffic
        and traffic / slots <= max_occupancy
        and 1 - _waiting(slots, traffic, blocking) * math.exp(-(slots - traffic) * target_seconds / aht_seconds)
        >= service_level_goal
    ):
        agents += 1
        for n in range(slots + 1, agents * concurrency + 1):
            blocking = traffic * blocking / (n + traffic * blocking)
        slots = agents * concurrency
    return Staffing(
        arrivals=arrivals,
        aht_seconds=aht_seconds,
        traffic=traffic,
        agents=agents,
        scheduled=math.ceil(agents / (1 - shrinkage) - 1e-9),
        service_level=service_level(slots, traffic, aht_seconds, target_seconds),
        mean_wait_seconds=mean_wait(slots, traffic, aht_seconds),
        occupancy=traffic / slots,
        probability_of_waiting=erlang_c(slots, traffic),
    )
