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
  (`check_json_only_where_it_can_fail`).
"""

import logging

from neosqlite.collection import query_helper
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


def main() -> None:
    check_json_only_where_it_can_fail()
    logging.setLogRecordFactory(record_without_data)
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    logging.captureWarnings(True)
    nx_27017_main()


if __name__ == "__main__":
    main()
