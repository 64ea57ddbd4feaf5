"""The filter language on its own: every spelling parsed to a literal Condition, and evaluation on
hand-written metadata with hand-written expected answers; plus one check that the CLI's ``-w``
reaches the search with quotes dropped and mistyped operators refused."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timezone

import pytest
from click.testing import CliRunner

from clipseek import filters
from clipseek.cli import cli
from clipseek.errors import BadFilter
from clipseek.filters import Atom, Condition

# 2024-05-01T00:00:00Z as epoch seconds, worked out by hand (19844 days after 1970-01-01).
MAY1 = 19844 * 86400.0
assert MAY1 == 1714521600.0

# ------------------------------------------------------------------------------------ CLI spellings


@pytest.mark.parametrize(
    "expr, cond",
    [
        ("camera=cam-07", Condition("camera", "eq", "cam-07")),
        ("camera==cam-07", Condition("camera", "eq", "cam-07")),
        ("  camera = cam-07  ", Condition("camera", "eq", "cam-07")),
        ("title=a b c", Condition("title", "eq", "a b c")),  # inner spaces kept
        ("folder=", Condition("folder", "eq", "")),
        ("folder==", Condition("folder", "eq", "")),
        ("year=2024", Condition("year", "eq", "2024")),  # a string: matching by number happens later
        ("width>=100", Condition("width", "gte", "100")),
        ("width <= 100", Condition("width", "lte", "100")),
        ("width>100", Condition("width", "gt", "100")),
        ("width<100", Condition("width", "lt", "100")),
        ("taken>=2024-05-01T08:00", Condition("taken", "gte", "2024-05-01T08:00")),
        ("camera in cam-07,cam-09", Condition("camera", "in", ("cam-07", "cam-09"))),
        ("camera IN cam-07, cam-09 ,", Condition("camera", "in", ("cam-07", "cam-09"))),
        ("camera   In   a", Condition("camera", "in", ("a",))),
        ("camera in a,,b", Condition("camera", "in", ("a", "b"))),  # empty unquoted items dropped
        ("note=x=y", Condition("note", "eq", "x=y")),  # only the first operator splits
        # quotes: one matching pair around a value or a list item is dropped
        ("folder='d1'", Condition("folder", "eq", "d1")),
        ('folder="d1"', Condition("folder", "eq", "d1")),
        ("folder=''", Condition("folder", "eq", "")),
        ('folder=""', Condition("folder", "eq", "")),
        ("title=' a b '", Condition("title", "eq", " a b ")),  # quotes keep outer spaces
        ("title='x\"", Condition("title", "eq", "'x\"")),  # not a matching pair: kept
        ("title='", Condition("title", "eq", "'")),
        ("title=it's", Condition("title", "eq", "it's")),
        ("title=XabX", Condition("title", "eq", "XabX")),
        ("title=`ab`", Condition("title", "eq", "`ab`")),  # only ' and " quote
        ("title='a'b'", Condition("title", "eq", "a'b")),  # one pair only
        ("width>='100'", Condition("width", "gte", "100")),
        ("note='>x'", Condition("note", "eq", ">x")),  # quoting is how to match a leading '>'
        ("folder in 'd1', \"d 2\" ,d3", Condition("folder", "in", ("d1", "d 2", "d3"))),
        ("folder in 'a,b',c", Condition("folder", "in", ("a,b", "c"))),  # quotes keep commas
        ("folder in '',sub", Condition("folder", "in", ("", "sub"))),  # '' is the empty value
        ("folder in 'ab'c,d", Condition("folder", "in", ("'ab'c", "d"))),  # not a whole quoted item
        ("folder in 'a", Condition("folder", "in", ("'a",))),
    ],
)
def test_parse_expr_spellings(expr: str, cond: Condition) -> None:
    assert filters.parse_expr(expr) == cond
    assert filters.parse(expr) == [cond]


@pytest.mark.parametrize(
    "expr, message",
    [
        ("folder", "cannot parse filter 'folder'; write FIELD=VALUE, 'FIELD in A,B', FIELD>=VALUE, FIELD<VALUE ..."),
        ("=red", "cannot parse filter '=red'"),
        ("width>=", "cannot parse filter 'width>='"),
        ("width<", "cannot parse filter 'width<'"),
        ("camera in ", "cannot parse filter 'camera in '"),
        ("camera in ,", "'in' needs at least one value: 'camera in ,'"),
        ("camera in , ,", "'in' needs at least one value: 'camera in , ,'"),
        ("a b=1", "cannot parse filter 'a b=1'"),
        ("width!=3", "cannot parse filter 'width!=3'"),
        ("width>=wide", "range filter on 'width' needs a number or an ISO-8601 time, got 'wide'"),
        ("width>=''", "range filter on 'width' needs a number or an ISO-8601 time, got ''"),
        # '=>' and '=<' are not operators; they used to be read as equality with '>100'
        (
            "width=>100",
            "cannot parse filter 'width=>100': '=>' is not an operator; write width>=100, "
            "or quote the value to compare with '>100' as text: width='>100'",
        ),
        (
            "width =< 5",
            "cannot parse filter 'width =< 5': '=<' is not an operator; write width<=5, "
            "or quote the value to compare with '< 5' as text: width='< 5'",
        ),
        (
            "width==>100",
            "cannot parse filter 'width==>100': '=>' is not an operator; write width>=100, "
            "or quote the value to compare with '>100' as text: width='>100'",
        ),
    ],
)
def test_parse_expr_errors(expr: str, message: str) -> None:
    with pytest.raises(BadFilter) as e:
        filters.parse(expr)
    assert str(e.value).startswith(message)


def test_parse_expr_error_message_is_exact() -> None:
    with pytest.raises(BadFilter) as e:
        filters.parse_expr("width=>100")
    assert str(e.value) == (
        "cannot parse filter 'width=>100': '=>' is not an operator; write width>=100, "
        "or quote the value to compare with '>100' as text: width='>100'"
    )


# ------------------------------------------------------------------------------------ other forms


def test_parse_none_and_empty() -> None:
    assert filters.parse(None) == []
    assert filters.parse([]) == []
    assert filters.parse({}) == []


def test_parse_mapping_forms() -> None:
    assert filters.parse({"camera": "cam-07"}) == [Condition("camera", "eq", "cam-07")]
    assert filters.parse({"year": 2024}) == [Condition("year", "eq", 2024)]
    assert filters.parse({"camera": ["a", "b"]}) == [Condition("camera", "in", ("a", "b"))]
    assert filters.parse({"camera": ("a",)}) == [Condition("camera", "in", ("a",))]
    assert filters.parse({"camera": {"in": ["a", "b"]}}) == [Condition("camera", "in", ("a", "b"))]
    assert filters.parse({"camera": {"$in": ("a", "b")}}) == [Condition("camera", "in", ("a", "b"))]
    assert filters.parse({"t": {"gte": "2024-05-01", "$lt": "2024-05-02"}}) == [
        Condition("t", "gte", "2024-05-01"),
        Condition("t", "lt", "2024-05-02"),
    ]
    assert filters.parse({"s": {"gt": 1, "lte": 2.5}, "c": "x"}) == [
        Condition("s", "gt", 1),
        Condition("s", "lte", 2.5),
        Condition("c", "eq", "x"),
    ]
    # python values are literal: no quote stripping outside the CLI syntax
    assert filters.parse({"folder": "'d1'"}) == [Condition("folder", "eq", "'d1'")]
    got = filters.parse({"camera": {"b", "a"}})
    assert len(got) == 1 and got[0].op == "in" and sorted(got[0].value) == ["a", "b"]


def test_parse_lists_mix_forms() -> None:
    c = Condition("x", "eq", 1)
    assert filters.parse([c, "camera=a", {"year": 2024, "z": [1]}]) == [
        c,
        Condition("camera", "eq", "a"),
        Condition("year", "eq", 2024),
        Condition("z", "in", (1,)),
    ]
    assert filters.parse(("a=1", "b<2")) == [Condition("a", "eq", "1"), Condition("b", "lt", "2")]
    assert filters.parse(iter(["a=1"])) == [Condition("a", "eq", "1")]


@pytest.mark.parametrize(
    "where, message",
    [
        ({"camera": {"in": "cam-07"}}, "'in' on 'camera' needs a list of values, got 'cam-07'"),
        ({"camera": {"in": b"ab"}}, "'in' on 'camera' needs a list of values, got b'ab'"),
        ({"camera": {"in": 3}}, "'in' on 'camera' needs a list of values, got 3"),
        ({"camera": {}}, "empty condition for field 'camera'"),
        ({"": 1}, "filter field names must be non-empty strings, got ''"),
        ({3: 1}, "filter field names must be non-empty strings, got 3"),
        ({"a": {"like": 1}}, "unknown filter operator 'like'; use one of eq, in, gt, gte, lt, lte"),
        ({"a": {"Xgt": 1}}, "unknown filter operator 'Xgt'; use one of eq, in, gt, gte, lt, lte"),
        ([Condition("a", "ne", 1)], "unknown filter operator 'ne'; use one of eq, in, gt, gte, lt, lte"),
        ([3], "cannot read filter item 3"),
        ([None], "cannot read filter item None"),
        ({"a": {"gt": "fast"}}, "range filter on 'a' needs a number or an ISO-8601 time, got 'fast'"),
        ({"a": {"lt": None}}, "range filter on 'a' needs a number or an ISO-8601 time, got None"),
        ({"a": {"gte": True}}, "range filter on 'a' needs a number or an ISO-8601 time, got True"),
        ({"a": None}, "filter on 'a' has no usable value: None"),
        ({"a": {"eq": {"x": 1}}}, "filter on 'a' has no usable value: {'x': 1}"),
        ({"a": []}, "filter on 'a' has no usable value: ()"),
        ({"a": [None, float("nan")]}, "filter on 'a' has no usable value: (None, nan)"),
    ],
)
def test_parse_errors(where: object, message: str) -> None:
    with pytest.raises(BadFilter) as e:
        filters.parse(where)
    assert str(e.value) == message


def test_an_in_list_with_one_usable_value_is_accepted() -> None:
    assert filters.parse({"a": [None, "x"]}) == [Condition("a", "in", (None, "x"))]
    assert filters.matches({"a": "x"}, filters.parse({"a": [None, "x"]})) is True


def test_to_json() -> None:
    conds = filters.parse(["camera in a,b", "width>=10", {"year": 2024}])
    assert filters.to_json(conds) == [
        {"field": "camera", "op": "in", "value": ["a", "b"]},
        {"field": "width", "op": "gte", "value": "10"},
        {"field": "year", "op": "eq", "value": 2024},
    ]
    assert filters.to_json([]) == []


def test_check_fields() -> None:
    filters.check_fields(filters.parse({"a": 1, "b": 2}), ["a", "b", "c"])
    filters.check_fields([], [])
    with pytest.raises(BadFilter) as e:
        filters.check_fields(filters.parse({"a": 1, "camra": 2}), ["width", "camera", "a"])
    assert str(e.value) == "unknown filter field 'camra'; this collection's fields: a, camera, width"
    with pytest.raises(BadFilter) as e:
        filters.check_fields(filters.parse({"a": 1}), iter([]))
    assert str(e.value) == "unknown filter field 'a'; this collection's fields: none"


# ------------------------------------------------------------------------------------ atoms


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-05-01", MAY1),
        ("  2024-05-01  ", MAY1),
        ("2024-05-01T00:00:00", MAY1),
        ("2024-05-01T10:30:00Z", MAY1 + 10.5 * 3600),
        ("2024-05-01T10:30:00+02:00", MAY1 + 8.5 * 3600),
        ("2024-05-01T00:00:00-01:00", MAY1 + 3600),
        ("20240501", MAY1),
        ("2024-05-01T08:00", MAY1 + 8 * 3600),
        ("2024", None),  # too short to be a date
        ("2024W01", None),  # an ISO week fromisoformat would read, but under 8 characters
        ("2024-05", None),
        ("abcd-05-01", None),
        ("2024-13-01", None),
        ("2024-05-01Tnope", None),
        ("", None),
        ("cam-07 and more", None),
    ],
)
def test_parse_time(text: str, expected: float | None) -> None:
    assert filters.parse_time(text) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        (True, Atom("true", None, None)),
        (False, Atom("false", None, None)),
        (3, Atom(None, 3.0, None)),
        (-2.5, Atom(None, -2.5, None)),
        (float("nan"), None),
        (float("inf"), None),
        ("3", Atom("3", 3.0, None)),
        (" 3.5 ", Atom(" 3.5 ", 3.5, None)),
        ("2024", Atom("2024", 2024.0, None)),  # a number, so not also a time
        ("20240501", Atom("20240501", 20240501.0, None)),  # also reads as a date: a number wins
        ("inf", Atom("inf", None, None)),
        ("nan", Atom("nan", None, None)),
        ("cam-07", Atom("cam-07", None, None)),
        ("", Atom("", None, None)),
        ("2024-05-01", Atom("2024-05-01", None, MAY1)),
        (date(2024, 5, 1), Atom("2024-05-01", None, MAY1)),
        (
            datetime(2024, 5, 1, 1, tzinfo=timezone.utc),
            Atom("2024-05-01T01:00:00+00:00", None, MAY1 + 3600),
        ),
        ({"a": 1}, None),
        ([1], None),
        (b"x", None),
    ],
)
def test_atom(value: object, expected: Atom | None) -> None:
    assert filters.atom(value) == expected


def test_naive_times_are_utc_whatever_the_local_zone(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert filters.parse_time("2024-05-01") == MAY1
        assert filters.parse_time("2024-05-01T08:00:00") == MAY1 + 8 * 3600
    finally:
        monkeypatch.undo()
        time.tzset()


def test_atoms_of_lists_skip_unfilterable_elements() -> None:
    assert filters.atoms(["car", None, 3, {"a": 1}, True]) == [
        Atom("car", None, None),
        Atom(None, 3.0, None),
        Atom("true", None, None),
    ]
    assert filters.atoms(("a",)) == [Atom("a", None, None)]
    assert filters.atoms(None) == []
    assert filters.atoms("ab") == [Atom("ab", None, None)]


# ------------------------------------------------------------------------------------ matches

RECORD = {
    "camera": "cam-07",
    "year": 2024,
    "year_s": "2024",
    "speed": 42.5,
    "zero": 0,
    "taken": "2024-05-01T10:00:00Z",
    "day": "2024-05-01",
    "labels": ["car", "dog", 3],
    "flag": True,
    "folder": "",
    "none": None,
    "nested": {"a": 1},
    "empty_list": [],
    "title": "a b",
}


@pytest.mark.parametrize(
    "where, expected",
    [
        # equality on strings and numbers
        ({"camera": "cam-07"}, True),
        ({"camera": "cam-7"}, False),
        ({"camera": "CAM-07"}, False),
        ({"year": 2024}, True),
        ({"year": "2024"}, True),
        ({"year": 2024.0}, True),
        ({"year": "2024.0"}, True),
        ({"year": 2023}, False),
        ({"year_s": 2024}, True),
        ({"year_s": "2024.0"}, True),  # equal numbers
        ({"zero": 0}, True),
        ({"zero": "0"}, True),
        ({"zero": False}, False),  # booleans are strings, never numbers
        ({"zero": "false"}, False),
        ({"flag": True}, True),
        ({"flag": "true"}, True),
        ({"flag": 1}, False),
        ({"flag": "True"}, False),
        ({"flag": False}, False),
        ({"folder": ""}, True),
        (["folder="], True),
        (["folder=''"], True),
        (["folder=x"], False),
        (["camera='cam-07'"], True),
        (['camera="cam-07"'], True),
        (["title=a b"], True),
        # in: any listed value, whichever position it has
        ({"camera": {"in": ["cam-07", "cam-09"]}}, True),
        ({"camera": {"in": ["cam-01", "cam-07"]}}, True),
        ({"camera": {"in": ["cam-01", "cam-02", "cam-07"]}}, True),
        ({"camera": {"in": ["cam-01", "cam-09"]}}, False),
        (["camera in cam-01,cam-07"], True),
        (["camera in cam-01,'cam-07'"], True),
        (["camera in cam-01,cam-02"], False),
        ({"year": [1999, 2024]}, True),
        ({"year": ["1999", "2024"]}, True),
        ({"year": [1999, 2000]}, False),
        # list fields: any element
        ({"labels": "car"}, True),
        ({"labels": "dog"}, True),
        ({"labels": "cat"}, False),
        ({"labels": 3}, True),
        ({"labels": "3"}, True),
        ({"labels": {"in": ["cat", "dog"]}}, True),
        ({"labels": {"gt": 2}}, True),
        ({"labels": {"gt": 3}}, False),
        ({"empty_list": "x"}, False),
        # numeric ranges, every operator at, below and above the bound
        ({"speed": {"gt": 42}}, True),
        ({"speed": {"gt": 42.5}}, False),
        ({"speed": {"gte": 42.5}}, True),
        ({"speed": {"gte": 42.6}}, False),
        ({"speed": {"lt": 42.5}}, False),
        ({"speed": {"lt": 43}}, True),
        ({"speed": {"lte": 42.5}}, True),
        ({"speed": {"lte": 42.4}}, False),
        ({"speed": {"gt": "42"}}, True),  # a bound that reads as a number
        (["speed>42"], True),
        (["speed<=42"], False),
        ({"year_s": {"gte": 2024}}, True),  # a numeric string compares as a number
        ({"year_s": {"gt": 2024}}, False),
        ({"speed": {"gt": 40, "lt": 45}}, True),  # AND inside one field
        ({"speed": {"gt": 40, "lt": 42}}, False),
        ({"zero": {"gte": 0}}, True),
        ({"zero": {"lt": 0}}, False),
        ({"camera": {"gt": 1}}, False),  # a word has no number
        ({"flag": {"gte": 0}}, False),  # a boolean has no number
        # time ranges
        ({"taken": {"gte": "2024-05-01"}}, True),
        ({"taken": {"gt": "2024-05-01T10:00:00Z"}}, False),
        ({"taken": {"gte": "2024-05-01T10:00:00Z"}}, True),
        ({"taken": {"gte": "2024-05-01T12:00:00+02:00"}}, True),  # the same instant
        ({"taken": {"gt": "2024-05-01T12:00:00+02:00"}}, False),
        ({"taken": {"lt": "2024-05-01T10:00:01"}}, True),  # naive means UTC
        ({"taken": {"lte": "2024-05-01T09:59:59Z"}}, False),
        ({"taken": {"lt": "2024-05-02"}}, True),
        ({"day": {"gte": "2024-05-01", "lt": "2024-05-02"}}, True),
        ({"day": {"gt": "2024-05-01"}}, False),
        ({"day": {"lte": "2024-04-30T23:59:59Z"}}, False),
        ({"speed": {"gte": "2024-05-01"}}, False),  # a number has no time
        ({"year": {"gte": "2024-05-01"}}, False),
        ({"taken": {"gt": 5}}, False),  # a time string has no number
        # time strings are equal only as strings
        ({"day": "2024-05-01"}, True),
        ({"day": "2024-05-01T00:00:00Z"}, False),
        # missing, None and unfilterable values never match
        ({"missing": "x"}, False),
        ({"missing": {"gt": 0}}, False),
        ({"none": "None"}, False),
        ({"none": {"gte": 0}}, False),
        ({"nested": "x"}, False),
        ({"nested": {"gt": 0}}, False),
        # AND across fields
        ({"camera": "cam-07", "year": 2024}, True),
        ({"camera": "cam-07", "year": 2023}, False),
        ({"camera": "cam-01", "year": 2024}, False),
        (["camera=cam-07", "speed<50", "labels=dog"], True),
        (["camera=cam-07", "speed<50", "labels=cat"], False),
        ([], True),
    ],
)
def test_matches(where: object, expected: bool) -> None:
    assert filters.matches(RECORD, filters.parse(where)) is expected


def test_matches_other_value_types() -> None:
    rec = {"d": date(2024, 5, 1), "dt": datetime(2024, 5, 1, 10, tzinfo=timezone.utc), "t": ("x", 2)}
    assert filters.matches(rec, filters.parse({"d": {"lt": "2024-05-01T00:00:01Z"}})) is True
    assert filters.matches(rec, filters.parse({"d": {"gt": "2024-05-01"}})) is False
    assert filters.matches(rec, filters.parse({"d": "2024-05-01"})) is True
    assert filters.matches(rec, filters.parse({"dt": {"gte": "2024-05-01T10:00:00Z"}})) is True
    assert filters.matches(rec, filters.parse({"dt": {"gt": "2024-05-01T10:00:00Z"}})) is False
    assert filters.matches(rec, filters.parse({"t": 2})) is True  # tuples are lists too
    assert filters.matches(rec, filters.parse({"t": "y"})) is False


def test_matches_consumes_a_generator_of_conditions() -> None:
    conds = iter(filters.parse(["camera=cam-07", "year=2024"]))
    assert filters.matches(RECORD, conds) is True


# ------------------------------------------------------------------------------------ through the CLI


def test_cli_where_quotes_and_mistyped_operators(tmp_path, photo_dir) -> None:  # type: ignore[no-untyped-def]
    def run(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), *args], catch_exceptions=False)

    assert run("index", str(photo_dir), "-c", "p", "--model", "test-colors", "-q").exit_code == 0

    def names(*where: str) -> list[str]:
        args = [a for w in where for a in ("-w", w)]
        res = run("search", "red", "-c", "p", "--json", *args)
        assert res.exit_code == 0, res.output
        return sorted(h["metadata"]["file_name"] for h in json.loads(res.output)["hits"])

    assert names("folder='sub'") == ["white.gif", "yellow.bmp"]
    assert names('folder="sub"') == ["white.gif", "yellow.bmp"]
    assert names("folder=''") == ["blue.webp", "green.png", "red.jpg"]
    assert names("file_name in 'nope.png', \"green.png\"") == ["green.png"]
    res = run("search", "red", "-c", "p", "-w", "width=>60")
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: cannot parse filter 'width=>60': '=>' is not an operator; write width>=60, "
        "or quote the value to compare with '>60' as text: width='>60'"
    )
