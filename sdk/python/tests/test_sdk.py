"""Unit tests of the SDK's pure-Python parts (schemas, decoding, encoding, tool checks), run
under plain Python: `python3 -m unittest discover -s sdk/python/tests -t sdk/python`."""

import unittest
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Dict, List, Literal, Optional, TypedDict, Union

from toolhost_tool import HttpDenied, HttpError, InvalidInput, Tool, ToolError, decode, encode, schema_for, tool
from toolhost_tool import _export, tooldef


class Color(Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    """A point."""

    x: Annotated[int, "Horizontal."]
    y: int = field(default=0, metadata={"doc": "Vertical."})


class Options(TypedDict, total=False):
    color: Color
    tags: List[str]


@dataclass
class Add:
    op: Literal["add"]
    points: List[Point]
    options: Optional[Options] = None


@dataclass
class Clear:
    op: Literal["clear"]


class SchemaTests(unittest.TestCase):
    def test_dataclass_schema_has_docs_required_and_no_extras(self):
        s = schema_for(Point)
        self.assertEqual(s["$schema"], "https://json-schema.org/draft/2020-12/schema")
        self.assertEqual(s["description"], "A point.")
        self.assertEqual(s["properties"]["x"], {"description": "Horizontal.", "type": "integer"})
        self.assertEqual(s["properties"]["y"]["description"], "Vertical.")
        self.assertEqual(s["required"], ["x"])
        self.assertFalse(s["additionalProperties"])

    def test_nested_types(self):
        s = schema_for(Add)
        self.assertEqual(s["properties"]["op"], {"enum": ["add"]})
        self.assertEqual(s["properties"]["points"]["items"]["type"], "object")
        options = s["properties"]["options"]["anyOf"][0]
        self.assertEqual(options["properties"]["color"], {"enum": ["red", "blue"]})
        self.assertNotIn("required", options)
        self.assertEqual(schema_for(Dict[str, float]), {"$schema": s["$schema"], "type": "object",
                                                        "additionalProperties": {"type": "number"}})

    def test_unsupported_type_is_a_type_error(self):
        with self.assertRaises(TypeError):
            schema_for(complex)


class DecodeTests(unittest.TestCase):
    def test_decodes_nested_values(self):
        value = decode(Union[Add, Clear], {"op": "add", "points": [{"x": 1}], "options": {"color": "red"}})
        self.assertEqual(value, Add("add", [Point(1, 0)], {"color": Color.RED}))
        self.assertEqual(decode(Union[Add, Clear], {"op": "clear"}), Clear("clear"))

    def test_errors_name_the_field(self):
        cases = [
            ({"op": "add", "points": [{"x": "1"}]}, "at `points[0].x`: expected an integer, got a string"),
            ({"op": "add", "points": [{"y": 1}]}, "at `points[0].x`: missing field"),
            ({"op": "add", "points": [], "z": 1}, "at `z`: unknown field"),
            ({"op": "add", "points": [], "options": {"color": "green"}}, "at `options.color`: expected one of"),
        ]
        for value, message in cases:
            with self.assertRaises(InvalidInput) as caught:
                decode(Union[Add, Clear], value)
            self.assertIn(message, caught.exception.message)

    def test_bare_containers(self):
        self.assertEqual(decode(list, [1, "a"]), [1, "a"])
        self.assertEqual(decode(dict, {"a": 1}), {"a": 1})
        with self.assertRaises(InvalidInput):
            decode(list, {"a": 1})

    def test_bool_is_not_an_int(self):
        with self.assertRaises(InvalidInput):
            decode(int, True)

    def test_encode_round_trips(self):
        value = Add("add", [Point(1, 2)], {"color": Color.BLUE, "tags": ["a"]})
        self.assertEqual(decode(Add, encode(value)), value)
        self.assertEqual(encode({"b", "a"}), ["a", "b"])


@dataclass
class Memory:
    seen: List[int] = field(default_factory=list)


class Remember(Tool):
    """Remembers numbers."""

    name = "remember"
    state: Memory

    def call(self, input: Point) -> dict:
        self.state.seen.append(input.x)
        return {"seen": self.state.seen}


@tool(name="double")
def double(input: Point) -> int:
    """Doubles x."""
    return input.x * 2


class ToolTests(unittest.TestCase):
    def test_state_declares_the_stateful_world(self):
        self.assertEqual(_export.world_of(Remember), _export.STATEFUL)
        self.assertEqual(_export.world_of(double), _export.PLAIN)
        self.assertEqual(Remember().call(Point(3)), {"seen": [3]})
        self.assertEqual(Remember().state, Memory())  # each instance starts fresh

    def test_decorated_function(self):
        tooldef.check(double)
        self.assertEqual(tooldef.description_of(double), "Doubles x.")
        self.assertEqual(double().call(Point(4)), 8)
        self.assertEqual(tooldef.output_type_of(double), int)

    def test_check_rejects_bad_names(self):
        class Bad(Tool):
            """Bad."""

            name = "Bad Name"

            def call(self, input: Point) -> dict:
                return {}

        with self.assertRaises(TypeError):
            tooldef.check(Bad)


if __name__ == "__main__":
    unittest.main()


class HttpTest(unittest.TestCase):
    """The parts of `http` that need no host; requests are tested against the host in
    tests/integration (python::http_through_the_sdk_is_granted_denied_audited_and_replayed)."""

    def test_a_response_reads_as_text_json_and_headers(self):
        from toolhost_tool.http import Response

        r = Response(200, [("content-type", b"application/json")], b'{"a": [1]}')
        self.assertTrue(r.ok)
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertIsNone(r.header("etag"))
        self.assertEqual(r.json(), {"a": [1]})
        self.assertEqual(Response(404, [], b"\xffx").text(), "\ufffdx")
        with self.assertRaises(HttpError) as caught:
            Response(200, [], b"<html>").json()
        self.assertIn("not JSON", caught.exception.message)

    def test_outside_a_component_a_request_is_a_failed_http_error(self):
        from toolhost_tool import http

        with self.assertRaises(HttpError) as caught:
            http.get("https://api.example.com/")
        self.assertEqual(caught.exception.kind, "failed")
        with self.assertRaises(HttpError):
            http.post("https://api.example.com/", body="x", json={"x": 1})
        self.assertTrue(issubclass(HttpDenied, ToolError) and HttpDenied.kind == "denied")
