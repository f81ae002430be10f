"""Building models.py rows from asyncpg records: the columns of a dataclass, optionally prefixed, so a
join can select two tables' rows without their column names colliding."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


def columns(model: type[Any], table: str | None = None, prefix: str = "") -> str:
    """`id, name, ...` of the dataclass, or `t.id AS p_id, ...` with a table alias and prefix."""
    names = [f.name for f in dataclasses.fields(model)]
    if table is None:
        return ", ".join(names)
    return ", ".join(f"{table}.{n} AS {prefix}{n}" for n in names)


def row_to(model: type[T], row: asyncpg.Record, prefix: str = "") -> T:
    return model(**{f.name: row[prefix + f.name] for f in dataclasses.fields(model)})  # type: ignore[arg-type]
