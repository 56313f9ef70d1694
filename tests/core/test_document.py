from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from configbus.codec import canonical, decode_body, load_file, parse, sha256_hex, to_builtins
from configbus.document import Document, pattern_of
from configbus.errors import InvalidDocument
from configbus.testing import sample_data, sample_document
from configbus.tooling.reference import SECTIONS
from configbus.validation import FORMAT_CHECKS, to_document


def issues_of(data: Any) -> list[str]:
    with pytest.raises(InvalidDocument) as info:
        to_document(data)
    return [str(i) for i in info.value.issues]


def mutated(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(sample_data())
    for path, value in changes.items():
        target: Any = data
        *parts, last = path.split("__")
        for p in parts:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"models__0__deployments__0__provider": "x"},
            "models[0].deployments[0].provider: unknown provider 'x'",
        ),
        ({"models__0__fallbacks": ["nope"]}, "models[0].fallbacks[0]: unknown model 'nope'"),
        (
            {"models__0__fallbacks": ["m"]},
            "models[0].fallbacks[0]: a model cannot fall back to itself",
        ),
        (
            {"providers__1__name": "upstream-a"},
            "providers[1].name: duplicate name 'upstream-a' (first at providers[0])",
        ),
        ({"clients__0__models": ["ghost"]}, "clients[0].models[0]: unknown model 'ghost'"),
        (
            {"models__0__deployments__0__weight": 0},
            "models[0].deployments: at least one deployment needs a weight above 0",
        ),
        (
            {"providers__0__api_key_env": "KEY"},
            "providers[0]: set either api_key or api_key_env, not both",
        ),
    ],
)
def test_semantic_errors_name_the_path(changes: dict[str, Any], expected: str) -> None:
    assert expected in issues_of(mutated(**changes))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"providers__0__timeout_s": "soon"},
            "providers[0].timeout_s: expected 'float', got 'str'",
        ),
        ({"providers__0__type": "grpc"}, "providers[0].type: invalid enum value 'grpc'"),
        (
            {"providers__0__base_url": "ftp://x"},
            "providers[0].base_url: expected an http:// or https:// URL",
        ),
        (
            {"clients__0__key_sha256": "abc"},
            "clients[0].key_sha256: expected 64 lowercase hex digits",
        ),
        (
            {"providers__0__circuit_breaker": {"failure_threshold": 0}},
            "providers[0].circuit_breaker.failure_threshold: expected 'int' >= 1",
        ),
        ({"logging": {"level": "LOUD"}}, "logging.level: invalid enum value 'LOUD'"),
        ({"models__1__colour": "red"}, "models[1]: object contains unknown field 'colour'"),
        ({"colour": "red"}, "colour: unknown field"),
    ],
)
def test_structural_errors_name_the_path(changes: dict[str, Any], expected: str) -> None:
    found = issues_of(mutated(**changes))
    assert any(f.startswith(expected) for f in found), found


def test_every_error_is_reported_at_once() -> None:
    data = mutated(providers__0__timeout_s="soon", models__1__colour="red", bogus=1)
    found = issues_of(data)
    assert len(found) == 3, found

    data = mutated(models__0__deployments__0__provider="x", clients__0__models=["ghost"])
    assert len(issues_of(data)) == 2


def test_every_patterned_field_is_checked() -> None:
    # validation checks patterns only on the fields of section items; one anywhere else
    # would be silently unchecked.
    patterned = {
        (struct.__name__, f.name)
        for struct in SECTIONS
        for f in msgspec.structs.fields(struct)
        if pattern_of(f.type) is not None
    }
    items = {"providers": "Provider", "models": "Model", "clients": "Client", "teams": "Team"}
    checked = {(items[section], attr) for section, attr, *_ in FORMAT_CHECKS}
    assert patterned == checked
    assert ("Client", "key_sha256") in checked


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"models__1__name": "m\n"}, "models[1].name: expected a name of letters"),
        ({"providers__1__name": "-b"}, "providers[1].name: expected a name of letters"),
        ({"clients__0__name": "a b"}, "clients[0].name: expected a name of letters"),
        ({"providers__1__api_key_env": "1X"}, "providers[1].api_key_env: expected an environment"),
        ({"providers__0__base_url": "http://x/\n"}, "providers[0].base_url: expected an http://"),
    ],
)
def test_format_errors_name_the_path(changes: dict[str, Any], expected: str) -> None:
    found = issues_of(mutated(**changes))
    assert [f for f in found if f.startswith(expected)], found


def test_a_stored_body_with_a_bad_name_is_rejected_with_its_path() -> None:
    body = canonical(sample_document()).replace(b'"name":"team-a"', b'"name":"team a"')
    with pytest.raises(InvalidDocument) as info:
        decode_body(body)
    assert [str(i) for i in info.value.issues] == [
        "clients[0].name: expected a name of letters, digits and . _ : / @ + -, "
        "starting with a letter or digit"
    ]


def test_format_errors_are_reported_beside_structural_ones() -> None:
    found = issues_of(mutated(clients__0__key_sha256="ABC", models__0__strategy="x"))
    assert (
        "clients[0].key_sha256: expected 64 lowercase hex digits (sha256 of the client's key)"
        in found
    )
    assert any(f.startswith("models[0].strategy: ") for f in found), found


def test_a_document_built_with_lists_has_the_canonical_bytes_of_its_decoded_form() -> None:
    doc = sample_document()
    built = Document(
        providers=list(doc.providers),  # type: ignore[arg-type]
        models=[msgspec.structs.replace(m, fallbacks=[]) for m in doc.models],  # type: ignore[arg-type, misc]
        clients=[],  # type: ignore[arg-type]
        metadata=doc.metadata,
    )
    body = canonical(built)
    assert b'"fallbacks"' not in body and b'"clients"' not in body
    assert canonical(decode_body(body)) == body


def test_builtins_are_plain_json_values() -> None:
    data = to_builtins(sample_document())
    assert isinstance(data["models"], list) and isinstance(data["models"][0]["deployments"], list)
    assert data == msgspec.json.decode(canonical(sample_document()))


def test_a_decoded_document_is_immutable_all_the_way_down() -> None:
    doc = decode_body(canonical(sample_document()))
    for seq in (doc.providers, doc.models, doc.models[0].deployments, doc.clients[0].models):
        assert isinstance(seq, tuple), seq
    with pytest.raises(AttributeError):
        doc.models[0].name = "changed"  # type: ignore[misc]


def test_fallback_cycle_is_reported_once() -> None:
    data = mutated(models__1__fallbacks=["m"])
    found = issues_of(data)
    assert found == ["models[0].fallbacks: fallback cycle: m -> m-backup -> m"]


def test_fallback_cycles_beside_a_self_reference_and_a_chain() -> None:
    def model(name: str, *fallbacks: str) -> dict[str, Any]:
        return {"name": name, "deployments": [{"provider": "upstream-a", "model": "x"}],
                "fallbacks": list(fallbacks)}  # fmt: skip

    data = mutated()
    data["models"] = [
        model("leaf"),
        model("chain", "leaf"),
        model("a", "a", "chain", "b"),
        model("b", "c"),
        model("c", "a", "leaf"),
    ]
    assert issues_of(data) == [
        "models[2].fallbacks[0]: a model cannot fall back to itself",
        "models[2].fallbacks: fallback cycle: a -> b -> c -> a",
    ]


def test_same_document_in_json_yaml_toml_is_the_same_bytes(tmp_path: Path) -> None:
    data = sample_data()
    (tmp_path / "c.json").write_text(__import__("json").dumps(data))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    toml_text = """
[[providers]]
name = "upstream-a"
base_url = "http://127.0.0.1:9001/v1"
api_key = {secret = "sk-upstream-secret-a"}
timeout_s = 10
max_retries = 1
circuit_breaker = {failure_threshold = 3, recovery_timeout_s = 1}

[[providers]]
name = "upstream-b"
base_url = "http://127.0.0.1:9002/v1"
api_key_env = "UPSTREAM_B_KEY"
timeout_s = 10
max_retries = 1

[[models]]
name = "m"
deployments = [{provider = "upstream-a", model = "mock-a"}]
fallbacks = ["m-backup"]
params = {temperature = 0.2}

[[models]]
name = "m-backup"
deployments = [{provider = "upstream-b", model = "mock-b"}]

[[clients]]
name = "team-a"
key_sha256 = "{key}"
models = ["*"]
rate_limit = {rpm = 600}

[logging]
level = "INFO"

[metadata]
owner = "platform"
""".replace("{key}", data["clients"][0]["key_sha256"])
    (tmp_path / "c.toml").write_text(toml_text)
    bodies = {canonical(load_file(tmp_path / f"c.{ext}")) for ext in ("json", "yaml", "toml")}
    assert len(bodies) == 1


def test_defaults_do_not_change_the_checksum() -> None:
    explicit = mutated(providers__0__enabled=True, logging={"level": "INFO"})
    assert sha256_hex(canonical(to_document(explicit))) == sha256_hex(canonical(sample_document()))


def test_canonical_roundtrip() -> None:
    doc = sample_document()
    assert decode_body(canonical(doc)) == doc


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ('{"providers": [}', "json", "cfg.json: line 1 column 16: invalid JSON"),
        ("providers: [\n  - a\n", "yaml", "cfg.json: line"),
        ("providers = [", "toml", "cfg.json: invalid TOML"),
    ],
)
def test_syntax_errors_name_source_and_line(text: str, fmt: Any, expected: str) -> None:
    with pytest.raises(InvalidDocument) as info:
        parse(text, fmt, source="cfg.json")
    assert str(info.value).startswith(expected)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidDocument, match="cannot read"):
        load_file(tmp_path / "nope.yaml")


def test_corrupt_body_is_rejected_with_reason() -> None:
    with pytest.raises(InvalidDocument, match="not valid JSON"):
        decode_body(b"{not json")
    with pytest.raises(InvalidDocument, match=r"models\[0\].deployments\[0\].provider"):
        decode_body(
            canonical(sample_document()).replace(b'"provider":"upstream-a"', b'"provider":"ghost"')
        )


def test_secret_repr_hides_plaintext() -> None:
    doc = sample_document()
    assert "sk-upstream-secret-a" not in repr(doc)


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "api-key"])
def test_credentials_in_plaintext_headers_are_refused(header: str) -> None:
    found = issues_of(mutated(providers__1__headers={header: "sk-live-123"}))
    assert found == [
        f"providers[1].headers.{header}: credentials go in api_key (encrypted) or "
        "api_key_env, not in headers"
    ]


def test_header_values_that_would_split_a_request_are_refused() -> None:
    found = issues_of(mutated(providers__1__headers={"x-team": "a\r\nx-injected: 1"}))
    assert found == ["providers[1].headers.x-team: a control character (CR, LF, NUL)"]


@pytest.mark.parametrize("header", ["Content-Length", "transfer-encoding", "Connection"])
def test_framing_headers_are_the_proxys(header: str) -> None:
    found = issues_of(mutated(providers__1__headers={header: "5"}))
    assert found == [f"providers[1].headers.{header}: set by the proxy for each request"]
