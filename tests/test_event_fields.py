"""The stored form of events (app/domain/events.py): the fields a Redis script XADDs and
the memory backend makes alike, and the one encoder that turns them into JSON."""

from __future__ import annotations

import orjson

from app.domain.events import build_event, event_fields, event_from_fields, fields_size


def test_fields_encode_every_member_kind_as_orjson_writes_it() -> None:
    extra = {"s": "a/b\t\"", "i": 2**60 + 1, "f": 0.1, "t": True, "no": None,
             "raw": b'{"x":1e-7}', "obj": {"k": [1, "two", None, {"d": False}]}, "empty": []}
    event = build_event("ns", 7, "kv.put", "k/1", 1_000, value=b'"v/1"', old_value=None,
                        session="s1", extra=extra)
    assert event.data == orjson.dumps({
        "revision": 7, "type": "kv.put", "ns": "ns", "key": "k/1", "session": "s1",
        "at": "1970-01-01T00:00:01.000Z", "value": "v/1", "old_value": None,
        **{**extra, "raw": {"x": 1e-7}},
    })
    assert b"\\/" not in event.data
    fields = event_fields("kv.put", "k/1", 1_000, value=b'"v/1"', session="s1", extra=extra)
    assert event.size == fields_size(fields) == sum(len(f) for f in fields)
    assert event_from_fields("ns", 7, fields) == event


def test_a_stored_json_null_differs_from_no_value_only_in_its_fields() -> None:
    null = event_fields("kv.put", "k", 0, value=b"null")
    none = event_fields("kv.put", "k", 0, value=None)
    assert null != none and null[8:10] == [b"jvalue", b"null"] and none[8:10] == [b"nvalue", b""]
    assert event_from_fields("n", 1, null).data == event_from_fields("n", 1, none).data


def test_an_event_stored_as_json_before_fields_is_read_as_it_is() -> None:
    data = b'{"revision":3,"type":"kv.delete","ns":"n","key":"k","at":"x"}'
    event = event_from_fields("n", 3, [b"t", b"kv.delete", b"k", b"k", b"s", b"", b"d", data])
    assert (event.type, event.key, event.session, event.data) == ("kv.delete", "k", None, data)
