"""The YAML files a service is configured by (intake's triage rules, notify's rules, sla's policies):
read once at start, and refused there with the file, the line and the reason, the same way in every
service, before anything connects."""

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class RulesFileError(ValueError):
    """`<file>:<line>: <reason>`, as compilers say it, so an editor can jump to the line."""

    def __init__(self, reason: str, line: int | None = None, path: str | Path | None = None) -> None:
        self.reason, self.line, self.path = reason, line, path
        super().__init__(f"{path or 'the rules file'}{f':{line}' if line else ''}: {reason}")

    def in_file(self, path: str | Path) -> "RulesFileError":
        """The same error, naming `path` (for a parser that was given text, not a file)."""
        return type(self)(self.reason, self.line, path)


def read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as error:
        raise RulesFileError(f"cannot read it: {error.strerror or error}", path=path) from None


def parse(text: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> object:
    """The YAML document in `text`; `loader` may be a SafeLoader of the caller's that checks as it builds."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader or a subclass of one
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise RulesFileError(f"not valid YAML: {error.problem or error}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise RulesFileError(f"not valid YAML: {error}") from None


def load(model: type[M], path: str | Path) -> M:
    """The file at `path` as `model`; the first thing wrong with it, at its line, as `RulesFileError`."""
    text = read(path)
    try:
        document = parse(text)
        return model.model_validate(document if document is not None else {})
    except RulesFileError as error:
        raise error.in_file(path) from None
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "the file"
        raise RulesFileError(f"{field}: {first['msg']}", _line_of(yaml.compose(text), first["loc"]), path) from None


def _line_of(node: yaml.Node | None, loc: Sequence[object]) -> int:
    """The 1-based line of the deepest YAML node `loc` (pydantic's error location) reaches."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
