"""Filters that the embedded Mongo-wire server (nx-27017, over SQLite) answers from an index.

MongoDB treats `{"f": v}` and `{"f": {"$eq": v}}` the same. nx-27017 does not: a plain equality
becomes `f = ? OR <f is an array containing v>`, and that OR keeps SQLite off every index, so the
call scans the whole collection. (Finds are spared only when some index's name happens to end in
`_f`; updates, deletes and find-and-modify never are.) Measured: 20,000 documents, `update_many`
40-85 ms plain, 1-3 ms with `$eq`.

What reaches an index there, read from its translator and checked with EXPLAIN QUERY PLAN:
- `_id` in any form: equality, `$in`, `$nin` (its own column). Not `_id` ranges: a find with
  `_id` `$gt`/`$lt` runs in Python over every document.
- Any other field: `{"$eq": v}` (`None` is `IS NULL`), and ranges (`$gt`, `$lte`, ...) on numbers
  and strings. SQLite uses an index whose leading fields are all constrained by `$eq`, then one
  range. Compound indexes work by their prefix; all their fields are stored ascending whatever
  the direction asked, so a sort in mixed directions sorts what the prefix selects.
- Not: `$in`/`$all` on a field other than `_id` (a scan of each document's JSON), `datetime`
  values (compared through `datetime()`; store instants as epoch ms), a top-level `$and`/`$or` in
  a find (filtered in Python). Beside an indexed `$eq`, such conditions only filter what it selects.
- `count_documents` is an aggregation that loads every document: keep counters instead.
"""

from collections.abc import Mapping
from typing import Any


def eq(fields: Mapping[str, Any] | None = None, /, **more: Any) -> dict[str, dict[str, Any]]:
    """`{"f": v}` written as `{"f": {"$eq": v}}`, which both MongoDB and nx-27017 serve from an index.

    Dotted paths go in the mapping: `eq({"customer.email": email}, status="new")`.
    """
    return {field: {"$eq": value} for field, value in {**(fields or {}), **more}.items()}
