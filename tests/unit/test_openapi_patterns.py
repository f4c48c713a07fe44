"""The OpenAPI document's patterns take what the server takes: schemathesis generates from
them (tests/test_openapi.py), with JSON Schema's regex classes, not Python's."""

from __future__ import annotations

import re
import sys

from panoptes.routes.openapi.common import a_name


def test_a_name_is_refused_by_the_pattern_exactly_when_stripping_empties_it() -> None:
    pattern = re.compile(a_name())
    spaces = [chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace()]
    # Among them U+0085 and U+001C, which ECMA-262's \s leaves out.
    assert "\x85" in spaces and "\x1c" in spaces
    for space in spaces:
        assert pattern.match(space * 2) is None, repr(space)
        assert pattern.match(f"{space}a{space}") is not None, repr(space)
    assert pattern.match("\ufeff") is not None  # not stripped: a name
    assert pattern.match("a\x00") is None
