"""The base of every answer Struct a handler returns.

Handlers build their answers from the plain records of the layers below (`to_dict`, `summary`) with
`msgspec.convert(record, T)`; `forbid_unknown_fields` makes that conversion fail on a key the Struct does
not declare, so an answer never silently loses a field the record has.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class Answer(msgspec.Struct, forbid_unknown_fields=True):
    """A JSON object a handler answers with; subclasses declare its fields."""


# a time as the records below write it (`datetime.isoformat()`, e.g. `2026-03-01T09:30:00+00:00`): the
# answer keeps that text, and the document still says it is a date-time
Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
