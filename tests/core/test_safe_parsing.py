"""Input that crashes naive parsers is refused with a clear message, in bounded memory."""

from __future__ import annotations

import pytest

from configbus.codec import MAX_DEPTH, parse
from configbus.errors import InvalidDocument

# Seven levels of ten aliases each: 10**7 values once expanded, a few hundred bytes of text.
BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(6)
)


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        (BOMB, "yaml", "YAML aliases expand past 1,000,000 values"),
        ('{"a": 1, "a": 2}', "json", "duplicate key 'a'"),
        ("a: 1\nb: {c: 1, c: 2}\n", "yaml", "line 2 column 11 invalid YAML: duplicate key 'c'"),
        ("[" * 5000 + "]" * 5000, "json", f"nested deeper than {MAX_DEPTH} levels"),
        ("[" * 5000 + "]" * 5000, "yaml", f"nested deeper than {MAX_DEPTH} levels"),
        ("[" * 70 + "]" * 70, "json", f"nested deeper than {MAX_DEPTH} levels"),
        ('{"metadata": {"x": NaN}}', "json", "nan is not a JSON number"),
        ("metadata: {x: .inf}", "yaml", "inf is not a JSON number"),
        ("[metadata]\nx = inf", "toml", "inf is not a JSON number"),
        ("a = 1\na = 2", "toml", "invalid TOML"),
    ],
)
def test_refused_with_a_clear_message(text: str, fmt: str, message: str) -> None:
    with pytest.raises(InvalidDocument) as info:
        parse(text, fmt, source="in.file")  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "in.file" in str(info.value)


def test_shared_anchors_and_ordinary_nesting_still_parse() -> None:
    assert parse("base: &b {timeout_s: 5}\np: *b\n", "yaml") == {
        "base": {"timeout_s": 5},
        "p": {"timeout_s": 5},
    }
    assert parse("[" * 60 + "]" * 60, "json")
