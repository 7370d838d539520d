"""Reading a planner's files line by line, and saying what is wrong with a line in plain words.

Every error names the line and the field, e.g. `line 7, qty: expected an integer, got "two"`, including a
byte that is not UTF-8 (`line 3: not UTF-8 text ...`). The readers here give each record its line number:
`text_lines` (UTF-8 checked per line), `csv_records` (a header, then one record per row, empty cells left
out) and `json_records` (a JSON array, or an object holding one under `rows`, or JSON Lines), so that the
schemas decoding the records (msgspec Structs) can be reported against the line they came from.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

_BOM = b"\xef\xbb\xbf"
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "text",
    "bool": "true or false",
    "array": "a list",
    "object": "an object",
    "datetime": "an ISO 8601 timestamp",
    "date": "a date (YYYY-MM-DD)",
    "null": "nothing",
}
_PATTERNS = {
    r"^[A-Za-z0-9._:\-]+$": "letters, digits, '.', '_', ':' and '-' only",
    r"^[a-z_]+$": "lower-case letters and '_' only",
    r"^\d{4}-\d{2}-\d{2}$": "a date, YYYY-MM-DD",
}
_MISSING = object()


class ReadError(ValueError):
    """A line of a file cannot be read: `line` (0 for the whole file), `field` ("" for the whole line)."""

    def __init__(self, line: int, field: str, reason: str) -> None:
        where = f"line {line}" if line else ""
        if field:
            where = f"{where}, {field}" if where else field
        super().__init__(f"{where}: {reason}" if where else reason)
        self.line = line
        self.field = field
        self.reason = reason


def shown(value: Any) -> str:
    """A value as the file wrote it: text in double quotes, anything else as JSON."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        return repr(value)


def _type_words(types: str, value: Any) -> str:
    names = [name.strip() for name in types.split("|")]
    if value is not _MISSING and value is not None and len(names) > 1:
        names = [name for name in names if name != "null"]
    return " or ".join(_TYPE_WORDS.get(name, name) for name in names)


def _lookup(record: Any, path: str) -> Any:
    value = record
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        key, index = part
        if key:
            if not isinstance(value, Mapping) or key not in value:
                return _MISSING
            value = value[key]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                return _MISSING
            value = value[int(index)]
    return value


def _bound(op: str, limit: str) -> str:
    limit = limit[:-2] if limit.endswith(".0") else limit
    return {
        ">=": f"must be {limit} or more",
        ">": f"must be above {limit}",
        "<=": f"must be at most {limit}",
        "<": f"must be below {limit}",
    }[op]


def explain(
    error: msgspec.ValidationError, record: Any, choices: Mapping[str, Sequence[str]] | None = None
) -> tuple[str, str]:
    """(field, reason) of a msgspec validation error of `record`, in plain words; `choices` lists the
    allowed values of a field by its name (for enum and tag errors)."""
    message, _, at = str(error).partition(" - at `")
    path = at.rstrip("`").removeprefix("$")
    field = path.lstrip(".")
    value = _lookup(record, path) if path else _MISSING
    got = f", got {shown(value)}" if value is not _MISSING else ""
    name = re.sub(r"\[\d+\]$", "", field.rsplit(".", 1)[-1])
    if match := re.fullmatch(r"Object missing required field `(.+)`", message):
        return (f"{field}.{match[1]}" if field else match[1]), "missing"
    if match := re.fullmatch(r"Object contains unknown field `(.+)`", message):
        return (f"{field}.{match[1]}" if field else match[1]), "not a known field"
    if match := re.fullmatch(r"Expected `([^`]+)`, got `[^`]+`", message):
        return field, f"expected {_type_words(match[1], value)}{got}"
    if match := re.fullmatch(r"Expected `str` of length (>=|<=) (\d+)", message):
        if match[1] == ">=" and match[2] == "1":
            return field, "must not be empty"
        most = "at least" if match[1] == ">=" else "at most"
        return field, f"must be {most} {match[2]} characters{got}"
    if match := re.fullmatch(r"Expected `array` of length (>=|<=) (\d+)", message):
        most = "at least" if match[1] == ">=" else "at most"
        return field, f"needs {most} {match[2]} entries"
    if match := re.fullmatch(r"Expected `(?:int|float)` (>=|>|<=|<) (\S+)", message):
        return field, f"{_bound(match[1], match[2])}{got}"
    if match := re.fullmatch(r"Expected `str` matching regex '(.+)'", message):
        pattern = match[1].replace("\\\\", "\\")
        return field, f"expected {_PATTERNS.get(pattern, f'text matching {pattern}')}{got}"
    if re.fullmatch(r"Invalid (?:enum )?value .*", message):
        allowed = (choices or {}).get(name)
        if allowed:
            return field, f"expected one of {', '.join(allowed)}{got}"
        return field, f"not an allowed value{got}"
    if "RFC3339" in message or "datetime" in message:
        return field, f"expected an ISO 8601 timestamp such as 2026-11-21T10:15:02Z{got}"
    return field, f"{message[:1].lower()}{message[1:]}{got}"


# ---------------------------------------------------------------------------------------------------------
# Reading lines, CSV and JSON with line numbers


def _decoded(number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReadError(
            number,
            "",
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); "
            "save the file as UTF-8",
        ) from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 file (a byte order mark is dropped)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, _decoded(number, raw[3:] if number == 1 and raw.startswith(_BOM) else raw)


def read_text(path: Path) -> str:
    """A whole UTF-8 file; a byte that is not UTF-8 is reported with its line."""
    return "".join(text for _, text in text_lines(path))


def csv_records(path: Path, known: Sequence[str] | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: cell}) per row after the header, cells stripped and empty ones left out;
    with `known`, a column outside it is an error naming it."""
    numbered = text_lines(path)
    current = [0]

    def lines() -> Iterator[str]:
        for number, text in numbered:
            current[0] = number
            yield text

    reader = csv.reader(lines())
    try:
        header = [cell.strip() for cell in next(reader, [])]
        if not any(header):
            raise ReadError(1, "", "expected a header naming the columns")
        for column in header:
            if not column:
                raise ReadError(1, "", "a column of the header has no name")
            if known is not None and column not in known:
                raise ReadError(1, column, f"not a known column; the columns are {', '.join(known)}")
        start = current[0] + 1
        for row in reader:
            number, start = start, current[0] + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise ReadError(number, "", f"{len(row)} cells, but the header names {len(header)} columns")
            yield number, {col: cell.strip() for col, cell in zip(header, row, strict=False) if cell.strip()}
    except csv.Error as exc:
        raise ReadError(current[0], "", f"not valid CSV ({exc})") from None


def _json_error(exc: json.JSONDecodeError) -> ReadError:
    return ReadError(exc.lineno, "", f"not valid JSON ({exc.msg} at column {exc.colno})")


def json_records(path: Path, wrapper: str = "rows", extra: Sequence[str] = ()) -> list[tuple[int, Any]]:
    """(line number, value) of each element of a JSON array, of the array under `wrapper` in a JSON
    object (whose other keys must be in `extra`), or of each line of a JSON Lines file (`.jsonl`)."""
    if path.suffix.lower() == ".jsonl":
        out: list[tuple[int, Any]] = []
        for number, text in text_lines(path):
            if text.strip():
                try:
                    out.append((number, json.loads(text)))
                except json.JSONDecodeError as exc:
                    raise ReadError(number, "", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        return out
    text = read_text(path)
    decoder = json.JSONDecoder()
    try:
        pos = _skip(text, 0)
        if text.startswith("[", pos):
            return _array(text, pos, decoder)[0]
        if not text.startswith("{", pos):
            line = text.count("\n", 0, pos) + 1
            raise ReadError(line, "", f"expected a JSON array, or an object with {wrapper!r}")
        found: list[tuple[int, Any]] | None = None
        pos = _skip(text, pos + 1)
        while not text.startswith("}", pos):
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if not text.startswith(":", pos):
                raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
            pos = _skip(text, pos + 1)
            line = text.count("\n", 0, pos) + 1
            if key == wrapper and text.startswith("[", pos):
                found, pos = _array(text, pos, decoder)
            elif key in extra:
                _, pos = decoder.raw_decode(text, pos)
            else:
                keys = ", ".join([wrapper, *extra])
                raise ReadError(line, str(key), f"not a known key; expected {keys}")
            pos = _skip(text, pos)
            if text.startswith(",", pos):
                pos = _skip(text, pos + 1)
            elif not text.startswith("}", pos):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        if found is None:
            raise ReadError(0, wrapper, f"missing: expected the rows under {wrapper!r}")
        return found
    except json.JSONDecodeError as exc:
        raise _json_error(exc) from None


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _array(text: str, pos: int, decoder: json.JSONDecoder) -> tuple[list[tuple[int, Any]], int]:
    out: list[tuple[int, Any]] = []
    line = text.count("\n", 0, pos) + 1
    counted = pos
    pos = _skip(text, pos + 1)
    while not text.startswith("]", pos):
        line += text.count("\n", counted, pos)
        counted = pos
        value, pos = decoder.raw_decode(text, pos)
        out.append((line, value))
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif not text.startswith("]", pos):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
    return out, pos + 1
