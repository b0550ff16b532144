"""The packages' shape: no import cycles, and nothing heavy imported by the shim itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it is imported (imports inside
    functions and ``if TYPE_CHECKING:`` blocks are not run at import, so not counted)."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        found: set[str] = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for child in ast.walk(node) if isinstance(node, (ast.Import, ast.ImportFrom)) else ():
                if isinstance(child, ast.Import):
                    found.update(alias.name for alias in child.names)
                elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                    found.add(child.module)
                    found.update(f"{child.module}.{alias.name}" for alias in child.names)
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph``, as a path that ends where it starts, or ``None``."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


@pytest.mark.parametrize("package", ["shim", "mockserver"])
def test_no_import_cycles(package: str) -> None:
    graph = _imports(package)

    assert len(graph) > 5  # the walk found the modules
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_importing_the_app_loads_neither_pyav_nor_numpy_nor_the_mock() -> None:
    code = (
        "import sys, shim.app, shim.cli, shim.plugin; "
        "print(sorted(m for m in ('av', 'numpy', 'mockserver') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()

    assert loaded == "[]"


def test_the_public_api_is_what_users_use() -> None:
    import shim

    assert sorted(shim.__all__) == ["Config", "__version__", "create_app"]
    for name in shim.__all__:
        assert getattr(shim, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Upstream'"):
        _ = shim.Upstream  # type: ignore[attr-defined]


def test_the_mock_makes_and_decodes_every_format_without_numpy() -> None:
    # numpy is not a dependency: with it unimportable, as in `pip install tts-shim`, the
    # mock still makes every format and the decoder reads it; only the float samples
    # need numpy, and say so.
    code = """if True:
        import sys
        sys.modules["numpy"] = None  # `import numpy` now raises ImportError
        from mockserver.audio import FORMATS, encode
        from shim.testing import decode_audio
        for fmt in FORMATS:
            seconds = decode_audio(encode("onyx", 12_000, fmt), fmt).seconds
            print(fmt, "decodes" if abs(seconds - 0.5) < 0.1 else seconds)
        try:
            decode_audio(encode("onyx", 12_000, "wav"), "wav", samples=True)
        except ImportError as exc:
            print(exc)
    """
    printed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.splitlines()

    assert printed == [
        *(f"{fmt} decodes" for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm")),
        "shim.testing.decode_audio(samples=True) needs numpy: pip install numpy",
    ]
