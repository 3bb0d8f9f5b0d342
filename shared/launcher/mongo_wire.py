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
- routes Python warnings through the same logging.
"""

import logging

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


def main() -> None:
    logging.setLogRecordFactory(record_without_data)
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    logging.captureWarnings(True)
    nx_27017_main()


if __name__ == "__main__":
    main()
