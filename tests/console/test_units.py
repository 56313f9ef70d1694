"""The console's pure parts: where each path starts in the editor's YAML."""

from __future__ import annotations

from admin.console.routes import line_map


def test_line_map_spells_paths_as_issues_do() -> None:
    text = "providers:\n  - name: a\n    base_url: http://x\nmodels:\n  - name: chat\n    fallbacks:\n      - chat-backpu\n"
    lines = line_map(text)
    assert lines["providers[0].name"] == 2
    assert lines["models[0].fallbacks"] == 6
    assert lines["models[0].fallbacks[0]"] == 7


def test_line_map_of_bad_yaml_is_empty() -> None:
    assert line_map("a: [1, 2\n") == {}
