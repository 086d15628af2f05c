"""The documentation stays true to the code.

* docs/api.md names every public name: ``utcp.__all__``, every public method
  and property of ``Endpoint``, ``Listener`` and ``Connection`` (as
  ``Class.name``), and ``__all__`` of ``utcp.chaos``, ``utcp.netem``,
  ``utcp.sim`` and ``utcp.pcap``, each inside a code span.
* The signatures docs/api.md shows in ``python`` blocks (``def`` stubs and
  dataclass field lists) match the code: parameter names, kinds, annotations
  and defaults.
* Every relative link in README.md and docs/*.md points to a file that
  exists, and a ``#fragment`` to a heading of that file.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import utcp
import utcp.chaos
import utcp.netem
import utcp.pcap
import utcp.sim
from utcp._core import codec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API = DOCS / "api.md"
LINKED_FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", re.M | re.S)
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

MODULES = [utcp.chaos, utcp.netem, utcp.sim, utcp.pcap]
CLASSES = [utcp.Endpoint, utcp.Listener, utcp.Connection]


def api_text() -> str:
    return API.read_text(encoding="utf-8")


def strip_fences(text: str) -> str:
    return FENCE.sub("", text)


# -- (1) every public name is documented ------------------------------------------------


def code_span_names(text: str) -> set[str]:
    """Every dotted identifier inside an inline code span, and each of its suffixes.

    ``utcp.chaos.open_relay(...)`` yields ``utcp.chaos.open_relay``,
    ``chaos.open_relay`` and ``open_relay``.
    """
    names: set[str] = set()
    for match in CODE_SPAN.finditer(strip_fences(text)):
        for dotted in re.findall(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*", match.group(2)):
            parts = dotted.split(".")
            for i in range(len(parts)):
                names.add(".".join(parts[i:]))
    return names


def public_members(cls: type) -> list[str]:
    return sorted(name for name in dir(cls) if not name.startswith("_"))


def required_names() -> list[str]:
    names = [f"utcp.{n}" for n in utcp.__all__]
    names += [f"{cls.__name__}.{m}" for cls in CLASSES for m in public_members(cls)]
    for module in MODULES:
        exported = getattr(module, "__all__", None)
        if exported is None:  # pragma: no cover - every module defines __all__ today
            exported = [n for n in vars(module) if not n.startswith("_")]
        names += [f"{module.__name__}.{n}" for n in exported]
    return names


@pytest.mark.parametrize("qualified", required_names())
def test_public_name_is_documented(qualified: str) -> None:
    spans = code_span_names(api_text())
    if qualified.startswith("utcp."):
        # Module-level names: bare (`open_relay`) or qualified (`utcp.chaos.open_relay`).
        name = qualified.rsplit(".", 1)[1]
    else:
        # Class members must be named with their class: `Connection.recv`.
        name = qualified
    assert name in spans, f"docs/api.md does not mention `{name}` in a code span ({qualified})"


def test_api_doc_covers_the_three_main_classes_with_sections() -> None:
    headings = set(HEADING.findall(strip_fences(api_text())))
    for cls in CLASSES:
        assert f"`utcp.{cls.__name__}`" in headings, f"no section for utcp.{cls.__name__}"


# -- (2) signatures in docs/api.md match the code --------------------------------------


Function = ast.FunctionDef | ast.AsyncFunctionDef


def parse_block(block: str) -> ast.Module | None:
    """A ``python`` block as code; a bare stub (``def f(x) -> int``) gets a ``: ...`` body."""
    for candidate in (block, block.rstrip() + ": ..."):
        try:
            return ast.parse(candidate)
        except SyntaxError:
            continue
    return None


def documented_stubs() -> tuple[dict[str, list[Function]], dict[str, ast.ClassDef]]:
    """Functions keyed by name (``recv``) or ``Class.name``, and classes by name."""
    functions: dict[str, list[Function]] = {}
    classes: dict[str, ast.ClassDef] = {}
    for block in PYTHON_BLOCK.findall(api_text()):
        tree = parse_block(block)
        if tree is None:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, node)
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        functions.setdefault(f"{node.name}.{item.name}", []).append(item)
    return functions, classes


def normal(annotation: str) -> str:
    return ast.unparse(ast.parse(annotation, mode="eval"))


def same_value(expected: object, node: ast.expr, namespace: dict[str, Any]) -> bool:
    try:
        value = eval(compile(ast.Expression(node), "<docs/api.md>", "eval"), dict(namespace))
    except Exception:
        return False
    return value is expected or (type(value) is type(expected) and value == expected)


_KINDS = inspect.Parameter


def stub_parameters(node: Function) -> list[tuple[str, Any, ast.expr | None, ast.expr | None]]:
    """(name, kind, annotation, default) for every parameter of a ``def`` node."""
    a = node.args
    out: list[tuple[str, Any, ast.expr | None, ast.expr | None]] = []
    positional = a.posonlyargs + a.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults))
    defaults += list(a.defaults)
    for i, arg in enumerate(positional):
        kind = _KINDS.POSITIONAL_ONLY if i < len(a.posonlyargs) else _KINDS.POSITIONAL_OR_KEYWORD
        out.append((arg.arg, kind, arg.annotation, defaults[i]))
    if a.vararg is not None:
        out.append((a.vararg.arg, _KINDS.VAR_POSITIONAL, a.vararg.annotation, None))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        out.append((arg.arg, _KINDS.KEYWORD_ONLY, arg.annotation, default))
    if a.kwarg is not None:
        out.append((a.kwarg.arg, _KINDS.VAR_KEYWORD, a.kwarg.annotation, None))
    return out


def signature_problems(obj: Callable[..., Any], node: Function) -> list[str]:
    """Differences between the code's signature of ``obj`` and the documented ``node``."""
    problems: list[str] = []
    inner = inspect.unwrap(obj)
    namespace = vars(sys.modules[inner.__module__])
    is_async = inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)
    if is_async != isinstance(node, ast.AsyncFunctionDef):
        problems.append(f"code is {'async ' if is_async else ''}def")
    if inspect.isasyncgenfunction(inner) and inner is not obj:
        decorators = {ast.unparse(d) for d in node.decorator_list}
        if "asynccontextmanager" not in decorators:
            problems.append("missing @asynccontextmanager")
    sig = inspect.signature(obj)
    code = list(sig.parameters.values())
    doc = stub_parameters(node)
    if [(p.name, p.kind) for p in code] != [(n, k) for n, k, _, _ in doc]:
        problems.append(
            f"parameters: code {[(p.name, str(p.kind)) for p in code]}, "
            f"doc {[(n, str(k)) for n, k, _, _ in doc]}"
        )
        return problems
    for p, (name, _, annotation, default) in zip(code, doc, strict=True):
        if isinstance(p.annotation, str):
            want = normal(p.annotation)
            got = ast.unparse(annotation) if annotation is not None else None
            if want != got:
                problems.append(f"{name}: annotation code {want!r}, doc {got!r}")
        if p.default is inspect.Parameter.empty:
            if default is not None:
                problems.append(f"{name}: has no default in the code")
        elif default is None:
            problems.append(f"{name}: default {p.default!r} missing in the doc")
        elif not same_value(p.default, default, namespace):
            problems.append(f"{name}: default code {p.default!r}, doc {ast.unparse(default)}")
    if isinstance(sig.return_annotation, str):
        want = normal(sig.return_annotation)
        got = ast.unparse(node.returns) if node.returns is not None else None
        if want != got:
            problems.append(f"return annotation: code {want!r}, doc {got!r}")
    return problems


FUNCTIONS: list[Callable[..., Any]] = [
    utcp.open_endpoint,
    utcp.serve,
    utcp.open_stream,
    utcp.open_listeners,
    codec.encode,
    codec.decode,
    codec.checksum,
    codec.flags_str,
    codec.encode_fields,
    utcp.pcap.internet_checksum,
    utcp.chaos.open_relay,
    utcp.chaos.run_relay,
    utcp.chaos.derive_seed,
    utcp.sim.derive_seed,
]

#: Classes whose public methods are documented with their signatures.
METHOD_CLASSES: list[type] = [
    utcp.Endpoint,
    utcp.Listener,
    utcp.Connection,
    utcp.Options,
    utcp.pcap.PcapWriter,
    utcp.netem.Link,
    utcp.netem.LinkStats,
    utcp.chaos.ChaosRelay,
    utcp.chaos.RelayStats,
    utcp.sim.Simulator,
    utcp.sim.SimConnection,
    utcp.sim.SimListener,
    utcp.sim.SimLink,
    utcp.sim.PathStats,
]

#: Classes users construct, whose ``__init__`` is documented.
CONSTRUCTED: list[type] = [
    utcp.Segment,
    utcp.pcap.PcapWriter,
    utcp.netem.Link,
    utcp.chaos.ChaosRelay,
    utcp.sim.Simulator,
    utcp.sim.SimLink,
]

#: Dataclasses and named tuples whose fields are documented as a class body.
RECORDS: list[type] = [
    utcp.ConnectionInfo,
    utcp.netem.Impairment,
    utcp.netem.GilbertElliott,
    utcp.netem.LinkStats,
    utcp.chaos.RelayStats,
    utcp.sim.PathStats,
    utcp.sim.TransferResult,
]


def signature_targets() -> Iterator[tuple[str, Callable[..., Any], list[str]]]:
    """(label, object, keys under which docs/api.md may document it)."""
    for fn in FUNCTIONS:
        exported = getattr(utcp, fn.__name__, None) is fn
        module = "utcp" if exported else inspect.unwrap(fn).__module__
        yield f"{module}.{fn.__name__}", fn, [fn.__name__]
    for cls in METHOD_CLASSES:
        for name, attr in vars(cls).items():
            if not name.startswith("_") and inspect.isfunction(attr):
                yield f"{cls.__name__}.{name}", getattr(cls, name), [name, f"{cls.__name__}.{name}"]
    for cls in CONSTRUCTED:
        yield f"{cls.__name__}.__init__", vars(cls)["__init__"], [f"{cls.__name__}.__init__"]


@pytest.mark.parametrize(
    ("label", "obj", "keys"),
    [pytest.param(label, obj, keys, id=label) for label, obj, keys in signature_targets()],
)
def test_documented_signature_matches_code(
    label: str, obj: Callable[..., Any], keys: list[str]
) -> None:
    functions, _ = documented_stubs()
    candidates = [node for key in keys for node in functions.get(key, [])]
    assert candidates, f"docs/api.md has no ```python``` signature for {label}"
    reports = [signature_problems(obj, node) for node in candidates]
    if not any(not problems for problems in reports):
        details = "\n".join("; ".join(problems) for problems in reports)
        pytest.fail(f"docs/api.md signature of {label} differs from the code:\n{details}")


def record_fields(cls: type) -> list[tuple[str, str | None, object, object]]:
    """(name, annotation, default, default_factory) in declaration order."""
    if dataclasses.is_dataclass(cls):
        return [
            (
                f.name,
                f.type if isinstance(f.type, str) else None,
                f.default,
                f.default_factory,
            )
            for f in dataclasses.fields(cls)
        ]
    annotations = cls.__annotations__
    defaults = getattr(cls, "_field_defaults", {})
    return [
        (
            name,
            annotations[name] if isinstance(annotations[name], str) else None,
            defaults.get(name, dataclasses.MISSING),
            dataclasses.MISSING,
        )
        for name in cls._fields  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_documented_fields_match_code(cls: type) -> None:
    _, classes = documented_stubs()
    node = classes.get(cls.__name__)
    assert node is not None, f"docs/api.md has no ```python``` class body for {cls.__name__}"
    namespace = vars(sys.modules[cls.__module__])
    doc = [item for item in node.body if isinstance(item, ast.AnnAssign)]
    code = record_fields(cls)
    doc_names = [item.target.id for item in doc if isinstance(item.target, ast.Name)]
    assert doc_names == [name for name, *_ in code], f"{cls.__name__} fields differ"
    for item, (name, annotation, default, factory) in zip(doc, code, strict=True):
        if annotation is not None:
            assert ast.unparse(item.annotation) == normal(annotation), f"{cls.__name__}.{name}"
        if factory is not dataclasses.MISSING:
            assert item.value is not None, f"{cls.__name__}.{name}: default_factory missing"
            keywords = {
                k.arg: k.value for k in getattr(item.value, "keywords", []) if k.arg is not None
            }
            assert "default_factory" in keywords, f"{cls.__name__}.{name}: not a field(...)"
            assert same_value(factory, keywords["default_factory"], namespace), name
        elif default is dataclasses.MISSING:
            assert item.value is None, f"{cls.__name__}.{name} has no default in the code"
        else:
            assert item.value is not None, f"{cls.__name__}.{name}: default missing"
            assert same_value(default, item.value, namespace), f"{cls.__name__}.{name}"


# -- (3) relative links resolve ---------------------------------------------------------


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: keep their text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in HEADING.findall(strip_fences(path.read_text(encoding="utf-8"))):
        slug = github_slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        result.add(slug if n == 0 else f"{slug}-{n}")
    return result


def relative_links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", strip_fences(path.read_text(encoding="utf-8")))
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [t for t in targets if not SCHEME.match(t)]


@pytest.mark.parametrize("path", LINKED_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken: list[str] = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: {dest} does not exist")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{fragment} in {dest.name}")
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    assert not broken, f"broken links in {where}:\n" + "\n".join(broken)


def test_link_checker_sees_links() -> None:
    """Guard the checker itself: README.md's documentation list is found."""
    links = relative_links(ROOT / "README.md")
    assert "docs/tutorial.md" in links
    assert all(not SCHEME.match(t) for t in links)
    assert github_slug("`utcp.open_endpoint`") == "utcpopen_endpoint"
    assert github_slug("High-level helpers") == "high-level-helpers"
