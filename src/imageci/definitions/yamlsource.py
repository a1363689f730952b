"""Load YAML while remembering the line of every key, so errors can say file:line.

PyYAML's composer gives nodes with marks; we build plain Python data from the
nodes ourselves and keep a map from each value's path (tuple of keys/indexes)
to its 1-based line. Duplicate keys are an error (YAML says keys are unique;
PyYAML would silently keep the last one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from imageci.errors import SourceError

if TYPE_CHECKING:
    import yaml

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass
class LocatedData:
    path: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of ``loc`` or of its closest located parent."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)


def _convert(node: yaml.Node, loc: PathKey, lines: dict[PathKey, int], path: str) -> Any:
    import yaml

    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            key = _convert(knode, (*loc, "<key>"), {}, path)
            if not isinstance(key, str | int | float | bool):
                raise SourceError(path, knode.start_mark.line + 1, "mapping keys must be plain scalars")
            if key in out:
                raise SourceError(path, knode.start_mark.line + 1, f"duplicate key {key!r}")
            skey = str(key)
            out[skey] = _convert(vnode, (*loc, skey), lines, path)
            lines[(*loc, skey)] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*loc, i), lines, path) for i, item in enumerate(node.value)]
    # Scalars: let the safe constructor resolve the tag (int, bool, null, str...).
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise SourceError(path, node.start_mark.line + 1, str(exc.problem)) from exc
    finally:
        loader.dispose()


def load_yaml(path: Path, text: str | None = None) -> LocatedData:
    """Parse one YAML document; malformed YAML raises SourceError with file:line."""
    import yaml  # (here: most commands read no YAML, and PyYAML's import compiles its large patterns)

    shown = str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise SourceError(shown, None, "file not found") from exc
        except UnicodeDecodeError as exc:
            raise SourceError(shown, None, f"not UTF-8 text: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise SourceError(shown, line, f"malformed YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise SourceError(shown, None, f"malformed YAML: {exc}") from exc
    lines: dict[PathKey, int] = {}
    data = None if node is None else _convert(node, (), lines, shown)
    return LocatedData(shown, data, lines)


def validate(model: type[M], src: LocatedData, context: dict[str, Any] | None = None) -> M:
    """Validate located data against a Pydantic model; the first error names file:line:field."""
    if not isinstance(src.data, dict):
        raise SourceError(src.path, src.line_of(()) or 1, "expected a mapping at the top level")
    try:
        return model.model_validate(src.data, context=context)
    except ValidationError as exc:
        def where(e: Any) -> int:
            return src.line_of([p for p in e["loc"] if isinstance(p, str | int)]) or 0

        err = min(exc.errors(), key=where)  # report the first problem in file order
        loc = [p for p in err["loc"] if isinstance(p, str | int)]
        # A tagged union repeats its tag in loc ("run", "run"): keep one.
        loc = [p for i, p in enumerate(loc) if not (i + 1 < len(loc) and isinstance(p, str) and loc[i + 1] == p)]
        # Pydantic appends union/tag names to loc; keep only the real path prefix.
        while loc and tuple(loc) not in src.lines and len(loc) > 1 and not isinstance(loc[-1], int):
            if tuple(loc[:-1]) in src.lines:
                break
            loc = loc[:-1]
        field = ".".join(str(p) for p in loc) or None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field missing"
        else:
            value = err.get("input")
            if isinstance(value, str | int | float | bool) or value is None:
                msg = f"{msg} (got {value!r})"
        raise SourceError(src.path, src.line_of(loc), msg, field) from exc
