"""The bulk loader stand-in (dev/neptune_loader.py) reads Neptune's Gremlin load format as the
documentation states it: what `graph.bulk_load` writes reads back to the same values, and each
thing Neptune rejects is rejected, a file as a whole or a record with its documented code."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from neptune_loader import (
    DATATYPE,
    PARSING,
    PARSING_ERROR,
    Column,
    Field,
    FileRejected,
    Record,
    RecordError,
    parse_csv,
    parse_feed,
    parse_header,
)

from imagegraph.graph.bulk_load import edge_lines, vertex_lines
from imagegraph.graph.elements import EdgeRecord, VertexRecord


def feed(*lines: str):
    return parse_feed("\n".join(lines) + "\n")


def test_what_bulk_load_writes_reads_back_as_the_same_values():
    vertices = [VertexRecord('s3://b/x, "y"\n.png', "image", {"sha256": "", "n": -3,
                                                             "ok": True, "f": 0.1}),
                VertexRecord(" s3://b/semi;colon\\ ", "image",
                             {"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)})]
    header, records = parse_feed("\n".join(vertex_lines(vertices)) + "\n")
    assert header.kind == "vertex"
    assert [(r.id, r.label, {k: v for k, (_, v) in r.properties.items()}) for r in records] == [
        ('s3://b/x, "y"\n.png', "image", {"sha256": [""], "n": [-3], "ok": [True], "f": [0.1]}),
        (" s3://b/semi;colon\\ ", "image",
         {"at": [datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)]})]
    assert all(c.cardinality == "single" for c in header.properties.values())
    header, records = parse_feed("\n".join(edge_lines(
        [EdgeRecord("e", "rel", "a", "b", {"score": float("nan"), "w": float("-inf")})])))
    assert header.kind == "edge"
    record = records[0]
    assert (record.id, record.from_id, record.to_id, record.label) == ("e", "a", "b", "rel")
    assert record.properties["w"][1] == [float("-inf")]


def test_csv_follows_rfc_4180():
    assert parse_csv('a, b ,"c ""d"" e"\r\n"x,\ny",,""\n\n') == [
        [Field("a"), Field("b"), Field('c "d" e', True)],
        [Field("x,\ny", True), Field(""), Field("", True)]]


@pytest.mark.parametrize("text, message", [
    ('a,b"c\n', "double quote inside an unquoted field"),
    ('"a"b,c\n', "text after a closing quote"),
    ('"a,b\n', "quoted field is not closed"),
])
def test_broken_csv_rejects_the_file(text, message):
    with pytest.raises(FileRejected, match=message):
        parse_csv(text)


@pytest.mark.parametrize("header, message", [
    ("~label,name:String", "no ~id column"),
    ("~id,~from,~label", "no ~to column"),
    ("~id,~to,~label", "no ~from column"),
    ("~id,~id,~label", "appears more than once"),
    ("~id,~key", "Invalid system column header '~key'"),
    ("~id,age:Integer", "Invalid data type 'Integer'"),
    ("~id,age:Int(multi)", "Invalid cardinality 'multi'"),
    ("~id,tags:String(single)[]", "contradict"),
    ("~id,~from,~to,w:Double(set)", "edge properties are single-valued"),
    ("~id,~from,~to,w:Double[]", "edge properties are single-valued"),
    ('~id,"my name:String"', "space, comma"),
    ("~id,name:String,name:String", "property column appears more than once"),
    ("~id,name:", "Invalid column header"),
])
def test_a_header_neptune_rejects_rejects_the_file(header, message):
    with pytest.raises(FileRejected, match=message):
        feed(header, "v1")


def test_header_forms_neptune_accepts():
    header = parse_header([Field(text) for text in (
        "~id", "~label", "a\\:b:string", "n:Int", "tags:String[]", "s:Date(single)",
        "t:Bool(set)", "plain")])
    assert list(header.properties.values()) == [
        Column("a:b", "String"), Column("n", "Int"), Column("tags", "String", array=True),
        Column("s", "Date", "single"), Column("t", "Bool"), Column("plain", "String")]


@pytest.mark.parametrize("line, message, counter", [
    (',"image",1', "Blank field in required column ~id", PARSING),
    ('"v1","image"', "Record has 2 fields, the header 3", PARSING),
    ('"v1","",1', "Labels cannot be empty", PARSING),
    ('"v1","image",abc', "Data type mismatch in column n: 'abc' is not a Int", DATATYPE),
    ('"v1","image",2147483648', "Data type mismatch in column n: '2147483648' is not a Int",
     DATATYPE),
])
def test_a_vertex_record_neptune_rejects_is_logged_with_its_number(line, message, counter):
    _, records = feed("~id,~label,n:Int(single)", '"v0","image",1', line)
    assert isinstance(records[0], Record)
    assert records[1] == RecordError(PARSING_ERROR, message, 2, counter)


@pytest.mark.parametrize("line, message", [
    ('"e1",,"b","rel",1.5', "Blank field in required column ~from"),
    ('"e1","a",,"rel",1.5', "Blank field in required column ~to"),
    ('"e1","a","b","rel",INF', "'INF' is not a Double"),
    ('"e1","a","b","rel",1.5.2', "'1.5.2' is not a Double"),
])
def test_an_edge_record_neptune_rejects_is_logged(line, message):
    _, records = feed("~id,~from,~to,~label,w:Double", line)
    assert records[0].code == PARSING_ERROR and message in records[0].message


def test_values_by_type():
    _, records = feed("~id,b:Bool,d:Date,f:Float,arr:String[]",
                      '"v",yes,2026-03-04,-1.5e3,"x;y\\;z"', '"w",TRUE,2026-03-04T05:06,,')
    assert records[0].properties["b"][1] == [False]  # documented: anything but true is false
    assert records[0].properties["d"][1] == [datetime(2026, 3, 4, tzinfo=timezone.utc)]
    assert records[0].properties["f"][1] == [-1500.0]
    assert records[0].properties["arr"][1] == ["x", "y;z"]
    assert records[1].properties["b"][1] == [True] and "f" not in records[1].properties
