"""docs/api.md is the HTTP contract shipped with the project: kept true against the server.

- every method and path of the served ``/openapi.json`` is named in a built section of the doc;
- every method and path a built section names is served (sections titled "(planned)" are not);
- the doc's error-code table lists exactly the codes of :data:`conveyor.problems.CODES`;
- the README points to the doc.
"""

from __future__ import annotations

import re

import httpx

from conveyor.problems import CODES
from tests.conftest import ROOT, Server

DOC = ROOT / "docs" / "api.md"
_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/[^`\s?]*)")
_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def _normal(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)  # `{id}` and `{job_id}` name the same segment


def _sections(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def _built(text: str) -> str:
    return "\n".join(body for title, body in _sections(text)
                     if not title.strip().endswith("(planned)"))


def _doc_routes(text: str) -> set[tuple[str, str]]:
    return {(method, _normal(path)) for method, path in _ROUTE.findall(text)}


def _served_routes(api: Server) -> set[tuple[str, str]]:
    doc = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    return {(method.upper(), _normal(path)) for path, item in doc["paths"].items()
            for method in item if method in _METHODS}


def test_every_served_route_is_documented_and_every_documented_one_served(api: Server) -> None:
    text = DOC.read_text()
    built, served = _doc_routes(_built(text)), _served_routes(api)
    assert len(served) >= 15
    assert served - built == set(), "routes missing from docs/api.md"
    assert built - served == set(), "docs/api.md names routes the server does not serve"


def test_planned_sections_are_marked_and_not_mistaken_for_built() -> None:
    titles = [title.strip() for title, _ in _sections(DOC.read_text())]
    planned = [t for t in titles if t.endswith("(planned)")]
    # Built (issues 12, 13, 15): their sections are titled without "(planned)".
    for built in ("URL import", "Resumable uploads (tus 1.0.0)", "Storage and broker settings"):
        assert built in titles, titles
        assert not any(t.startswith(built) for t in planned), planned


def test_error_codes_are_exactly_the_servers() -> None:
    text = DOC.read_text()
    table = text.split("### Error codes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", table, flags=re.M)
    codes = [code for code, _status in documented]
    assert len(codes) == len(set(codes)), "a code is listed twice"
    assert set(codes) - set(CODES) == set(), "docs/api.md lists codes the server never sends"
    assert set(CODES) - set(codes) == set(), "codes missing from docs/api.md"


def test_the_readme_points_to_the_shipped_contract() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/api.md" in readme
    assert "`API.md`" not in readme
