"""nx-27017, the embedded Mongo-wire server, run so that its log holds no stored data.

`python -m shared.launcher.mongo_wire <nx-27017's own arguments>`. nx-27017 has no option for
its log level (only `--verbose`), and what it logs quotes what it stores: at INFO every command it
passes to its engine, filters included ("Calling db.command with: {...}"), and its engine
(neosqlite) formats query values, documents and exceptions into its warnings and errors with
f-strings, so no filter can tell the words from the data. Before calling nx-27017's `main`, this
module therefore:

- logs at WARNING (nx-27017's own `basicConfig` then finds a handler and changes nothing);
- replaces the text of every record, whoever adds the handler: a %-style message keeps its
  template (constant text) without its values, any other text is withheld; every record keeps
  its time, level, logger and the source line that logged it, and an exception its type only;
- routes Python warnings through the same logging;
- spares its engine a second parse of each document it writes, where that parse cannot fail
  (`check_json_only_where_it_can_fail`), and two generic walks of each document it reads or writes,
  where a plain one does the same (`read_plain_json_plainly`, `copy_plain_data_plainly`).
"""

import copy
import json
import logging
import sys
from datetime import datetime

from bson.int64 import Int64
from neosqlite.collection import json_helpers, query_helper
from nx_27017.nx_27017 import main as nx_27017_main

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - [%(process)d] - %(message)s"
_record = logging.getLogRecordFactory()


def record_without_data(*args, **kwargs) -> logging.LogRecord:
    record = _record(*args, **kwargs)
    text = f"{record.msg} (values withheld)" if record.args else "(text withheld)"
    if record.exc_info and record.exc_info[0] is not None:
        text += f" ({record.exc_info[0].__name__})"
    record.msg = f"{record.module}.{record.funcName}:{record.lineno}: {text}"
    record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
    return record


def check_json_only_where_it_can_fail() -> None:
    """neosqlite writes each document as the text `json.dumps` makes of it, then has SQLite's `json_valid`
    parse that text again, in a statement of its own, before the insert: about a tenth of nx-27017's busy
    time under load. `json.dumps` writes valid JSON but for the tokens of non-finite floats (`NaN`,
    `Infinity`), so only a text that holds one of those words is still checked, and refused as before."""
    check = query_helper._validate_json_document

    def validate(db, json_str: str) -> bool:
        return ("NaN" not in json_str and "Infinity" not in json_str) or check(db, json_str)

    query_helper._validate_json_document = validate


def _replace_in_engine(name: str, old, new) -> None:
    """Every engine module that bound `old` to `name` when it was imported gets `new` instead."""
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("neosqlite") and getattr(module, name, None) is old:
            setattr(module, name, new)


JSON_MARKERS = ("__neosqlite_", "$date")
"""What neosqlite's JSON decoding hook looks for: its stored forms of binary values, ObjectIds and dates.
`json.dumps`, which writes every document, never escapes these characters, so a text that does not
contain them holds none."""


def read_plain_json_plainly() -> None:
    """neosqlite reads every stored document with `json.loads` and an object hook, a Python call for each
    object in it, that turns its markers back into binary values, ObjectIds and dates: 20 µs for a
    delivery's 1.2 kB, against 11 µs without. A text without any marker is read without the hook.

    The engine's modules that bound the function by name get the new one too."""
    hooked = json_helpers.neosqlite_json_loads

    def loads(text, **kwargs):
        if not kwargs and isinstance(text, str) and not any(marker in text for marker in JSON_MARKERS):
            return json.loads(text)
        return hooked(text, **kwargs)

    _replace_in_engine("neosqlite_json_loads", hooked, loads)


class _NotPlain(Exception):
    pass


_IMMUTABLE = frozenset({str, int, Int64, float, bool, type(None), bytes, datetime})
"""Copied as they are: `copy.deepcopy` keeps them too, or makes an equal one (a `datetime`, an `Int64`)."""


def _plain_copy(value):
    kind = type(value)
    if kind is dict:
        return {key: _plain_copy(item) for key, item in value.items()}
    if kind is list:
        return [_plain_copy(item) for item in value]
    if kind in _IMMUTABLE:
        return value
    raise _NotPlain


def copy_plain_data_plainly() -> None:
    """neosqlite deep-copies each document it inserts or updates with `copy.deepcopy`, whose generic
    dispatch and memo cost 27 µs for a delivery, a fifth of an insert; a walk of its dicts, lists and
    immutable values copies it in 9. What the server copies is decoded BSON, in which no value appears
    twice, so the memo has nothing to keep; anything else (another type, a memo passed in, a structure
    that contains itself) is copied by `copy.deepcopy` as before. The engine imports `deepcopy` at each
    insert, so the module's own function is the one replaced, in this process only."""
    deepcopy = copy.deepcopy

    def plain_first(value, memo=None):
        if memo is None:
            try:
                return _plain_copy(value)
            except (_NotPlain, RecursionError):
                pass
        return deepcopy(value, memo)

    copy.deepcopy = plain_first
    _replace_in_engine("deepcopy", deepcopy, plain_first)


def main() -> None:
    check_json_only_where_it_can_fail()
    read_plain_json_plainly()
    copy_plain_data_plainly()
    logging.setLogRecordFactory(record_without_data)
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    logging.captureWarnings(True)
    nx_27017_main()


if __name__ == "__main__":
    main()
