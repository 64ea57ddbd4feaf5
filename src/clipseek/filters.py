"""Metadata filters: one small language shared by the Python API, the CLI and every store.

A filter is a list of conditions that must all hold (AND). Each condition names a metadata field,
an operator and a value::

    {"camera": "cam-07"}                               equality
    {"camera": {"in": ["cam-07", "cam-09"]}}           set membership
    {"taken_at": {"gte": "2024-05-01", "lt": "2024-05-02T12:00:00"}}   time range (ISO-8601)
    {"speed": {"gt": 80}}                              numeric range
    {"labels": "car"}                                  a list field holds "car"

The CLI spells the same conditions as ``--where camera=cam-07``, ``--where "camera in cam-07,cam-09"``,
``--where taken_at>=2024-05-01``, ``--where labels=car``. One pair of matching quotes around a
value or a list item is dropped (``folder='d1'`` is ``folder=d1``, ``folder=''`` the empty value):
quotes are only needed to keep outer spaces or commas. ``=>`` and ``=<`` are refused as typos of
``>=`` and ``<=``.

Semantics (every store must give exactly these; ``tests/contract`` checks every store against an
evaluator of its own written from this list, not against :func:`matches`):

- a record without the field, or with ``None`` there, never matches;
- a list value matches when *any* element matches (so ``labels=car`` is label membership);
- every scalar is reduced to an :class:`Atom`: its string form (strings and booleans), its number
  (numbers, and strings that read as a number) and its time (strings that read as an ISO-8601
  date/time, as UTC seconds);
- ``eq``/``in`` match on equal strings or on equal numbers, so ``year=2024`` finds the int 2024;
- ``gt/gte/lt/lte`` compare numbers when the bound is a number (or reads as one), else times when
  the bound reads as an ISO-8601 time; any other bound is a :class:`BadFilter`;
- a field no record of the collection has is a :class:`BadFilter` (catches typos like ``camra``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable, Mapping

from .errors import BadFilter

OPS = ("eq", "in", "gt", "gte", "lt", "lte")
RANGE_OPS = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any  # a scalar, or a tuple of scalars for "in"


@dataclass(frozen=True)
class Atom:
    s: str | None
    n: float | None
    t: float | None


def parse_time(x: str) -> float | None:
    """UTC epoch seconds of an ISO-8601 date or date-time string, or None."""
    x = x.strip()
    if len(x) < 8 or not x[:4].isdigit():
        return None
    try:
        d = datetime.fromisoformat(x.replace("Z", "+00:00") if x.endswith("Z") else x)
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _parse_number(x: str) -> float | None:
    try:
        v = float(x)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def atom(v: Any) -> Atom | None:
    """Reduce one scalar metadata value to the forms filters compare. None for unfilterable values."""
    if v is None:
        return None
    if isinstance(v, bool):
        return Atom("true" if v else "false", None, None)
    if isinstance(v, (int, float)):
        try:
            f = float(v)
        except OverflowError:  # an int beyond float range (JSON allows any): not comparable as a number
            return None
        return Atom(None, f, None) if math.isfinite(f) else None
    if isinstance(v, datetime):
        v = v.isoformat()
    elif isinstance(v, date):
        v = v.isoformat()
    if isinstance(v, str):
        n = _parse_number(v)
        return Atom(v, n, None if n is not None else parse_time(v))
    return None  # dicts and other structures are stored but not filterable


def atoms(value: Any) -> list[Atom]:
    """All atoms of a metadata value (a list contributes one per filterable element)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for it in items:
        a = atom(it)
        if a is not None:
            out.append(a)
    return out


def _range_key(c: Condition) -> tuple[str, float]:
    """For a range condition: which atom slot it compares ('n' or 't') and the bound."""
    a = atom(c.value)
    if a is not None and a.n is not None:
        return "n", a.n
    if a is not None and a.t is not None:
        return "t", a.t
    raise BadFilter(f"range filter on {c.field!r} needs a number or an ISO-8601 time, got {c.value!r}")


def _cmp(op: str, x: float, bound: float) -> bool:
    return {"gt": x > bound, "gte": x >= bound, "lt": x < bound, "lte": x <= bound}[op]


def eq_targets(c: Condition) -> list[Atom]:
    vals = c.value if c.op == "in" else (c.value,)
    out = [a for a in (atom(v) for v in vals) if a is not None]
    if not out:
        raise BadFilter(f"filter on {c.field!r} has no usable value: {c.value!r}")
    return out


def atom_matches(a: Atom, c: Condition) -> bool:
    if c.op in ("eq", "in"):
        for t in eq_targets(c):
            if a.s is not None and t.s is not None and a.s == t.s:
                return True
            if a.n is not None and t.n is not None and a.n == t.n:
                return True
        return False
    slot, bound = _range_key(c)
    x = a.n if slot == "n" else a.t
    return x is not None and _cmp(c.op, x, bound)


def matches(metadata: Mapping[str, Any], conditions: Iterable[Condition]) -> bool:
    """Reference evaluation of a filter on one record's metadata."""
    for c in conditions:
        if not any(atom_matches(a, c) for a in atoms(metadata.get(c.field))):
            return False
    return True


def check_fields(conditions: Iterable[Condition], known: Iterable[str]) -> None:
    known = set(known)
    for c in conditions:
        if c.field not in known:
            hint = ", ".join(sorted(known)) or "none"
            raise BadFilter(f"unknown filter field {c.field!r}; this collection's fields: {hint}")


def validate(conditions: Iterable[Condition]) -> None:
    """Check every bound is usable, so a bad filter fails before any search work."""
    for c in conditions:
        if c.op in RANGE_OPS:
            _range_key(c)
        else:
            eq_targets(c)


# ---------------------------------------------------------------------------------------- parsing

def parse(where: Any) -> list[Condition]:
    """Parse any accepted filter form (dict, CLI strings, conditions) into a validated list."""
    if where is None:
        return []
    if isinstance(where, str):
        conds = [parse_expr(where)]
    elif isinstance(where, Mapping):
        conds = _parse_mapping(where)
    else:
        conds = []
        for item in where:
            if isinstance(item, Condition):
                conds.append(item)
            elif isinstance(item, str):
                conds.append(parse_expr(item))
            elif isinstance(item, Mapping):
                conds.extend(_parse_mapping(item))
            else:
                raise BadFilter(f"cannot read filter item {item!r}")
    for c in conds:
        if c.op not in OPS:
            raise BadFilter(f"unknown filter operator {c.op!r}; use one of {', '.join(OPS)}")
    validate(conds)
    return conds


def _parse_mapping(where: Mapping[str, Any]) -> list[Condition]:
    out = []
    for fieldname, spec in where.items():
        if not isinstance(fieldname, str) or not fieldname:
            raise BadFilter(f"filter field names must be non-empty strings, got {fieldname!r}")
        if isinstance(spec, Mapping):
            if not spec:
                raise BadFilter(f"empty condition for field {fieldname!r}")
            for op, val in spec.items():
                op = str(op).lstrip("$")
                if op == "in":
                    if isinstance(val, (str, bytes)) or not isinstance(val, Iterable):
                        raise BadFilter(f"'in' on {fieldname!r} needs a list of values, got {val!r}")
                    val = tuple(val)
                out.append(Condition(fieldname, op, val))
        elif isinstance(spec, (list, tuple, set)):
            out.append(Condition(fieldname, "in", tuple(spec)))
        else:
            out.append(Condition(fieldname, "eq", spec))
    return out


_EXPR = re.compile(r"^\s*([^\s=<>!]+)\s*(>=|<=|==|=|>|<|\s+in\s+)\s*(.*?)\s*$", re.IGNORECASE)
_OPMAP = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt", "=": "eq", "==": "eq"}
# one item of an 'in' list: a whole quoted item (which may hold commas), else anything up to a comma
_ITEM = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)"|([^,]*?))\s*(?:,|\Z)""")


def _unquote(value: str) -> str:
    """Drop one pair of matching single or double quotes around a value (they keep spaces)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _split_list(value: str) -> tuple[str, ...]:
    """The items of an 'in' list: unquoted empty items are dropped, a quoted '' is the empty value."""
    items: list[str] = []
    pos = 0
    while True:
        m = _ITEM.match(value, pos)
        assert m is not None  # the last alternative matches any text up to a comma or the end
        quoted = m.group(1) if m.group(1) is not None else m.group(2)
        if quoted is not None:
            items.append(quoted)
        elif m.group(3):
            items.append(m.group(3))
        if not m.group(0).endswith(","):
            return tuple(items)
        pos = m.end()


def parse_expr(expr: str) -> Condition:
    """Parse one CLI condition: ``field=value``, ``field in a,b``, ``field>=value`` ...

    One pair of matching quotes around the value, or around an item of an ``in`` list, is dropped:
    quotes are only needed to keep outer spaces or commas, or a leading ``>``/``<`` after ``=``
    (``folder=''`` means the empty value, as ``folder=`` does).
    """
    m = _EXPR.match(expr)
    # an empty value is allowed for equality only ("folder=" means the top folder)
    if not m or (not m.group(3) and m.group(2).strip() not in ("=", "==")):
        raise BadFilter(
            f"cannot parse filter {expr!r}; write FIELD=VALUE, 'FIELD in A,B', FIELD>=VALUE, FIELD<VALUE ..."
        )
    fieldname, op, value = m.group(1), m.group(2).strip().lower(), m.group(3)
    if op == "in":
        vals = _split_list(value)
        if not vals:
            raise BadFilter(f"'in' needs at least one value: {expr!r}")
        return Condition(fieldname, "in", vals)
    if op in ("=", "==") and value[:1] in (">", "<"):
        # 'width=>100' is a mistyped '>=', not equality with the text '>100': refusing it beats
        # silently matching nothing, and a value that really starts with '>' can be quoted
        rest = value[1:].lstrip()
        raise BadFilter(
            f"cannot parse filter {expr!r}: '={value[0]}' is not an operator; write {fieldname}{value[0]}={rest}, "
            f"or quote the value to compare with {value!r} as text: {fieldname}='{value}'"
        )
    return Condition(fieldname, _OPMAP[op], _unquote(value))


def to_json(conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    return [{"field": c.field, "op": c.op, "value": list(c.value) if c.op == "in" else c.value} for c in conditions]
