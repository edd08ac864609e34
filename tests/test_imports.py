"""The engine never imports the app or Dear PyGui (one module owns one thing)."""
import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
FORBIDDEN = ("spatialavatar_app", "dearpygui", "glfw")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_engine_never_imports_the_app_or_gui_toolkits():
    offenders = {}
    for path in ENGINE.rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN}
        if bad:
            offenders[str(path.relative_to(ENGINE.parent))] = sorted(bad)
    assert offenders == {}


def test_the_import_scan_sees_imports():
    # The scan must catch both import forms, or the test above could never fail.
    src = "import dearpygui.dearpygui as dpg\nfrom spatialavatar_app.cli import main\n"
    tree_file = Path(__file__).with_name("_scan_probe.py")
    tree_file.write_text(src)
    try:
        assert imported_modules(tree_file) == {"dearpygui.dearpygui", "spatialavatar_app.cli"}
    finally:
        tree_file.unlink()
