"""The import graph of `engine` and `spatialavatar_app`, read from the source: no module imports
itself back through others (imports inside functions count, since they run too; imports under
``if TYPE_CHECKING:`` never run and do not), and the engine never imports the app."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "spatialavatar_app")


def modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """{module: the project's modules it imports}. Importing ``a.b.c`` also runs the packages
    ``a`` and ``a.b`` (unless the importer lies inside them, which are then already running)."""
    mods = modules(root, packages)
    graph = {m: set() for m in mods}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                parts = t.split(".")
                for i in range(1, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in mods and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    found = cycles(import_graph(ROOT))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_engine_never_imports_the_app():
    graph = import_graph(ROOT)
    bad = {m: sorted(d for d in deps if d.startswith("spatialavatar_app")) for m, deps in graph.items()
           if m.startswith("engine") and any(d.startswith("spatialavatar_app") for d in deps)}
    assert not bad, bad


def test_the_scanner_sees_cycles_through_functions_and_packages_but_not_type_checking(tmp_path):
    """A probe: the checks above would fail on a tree that has these."""
    pkg = tmp_path / "probe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from probe.sub.b import g\n")
    (pkg / "a.py").write_text("def f():\n    from probe.sub import b\n")        # a -> sub.b (and sub)
    (pkg / "sub" / "b.py").write_text("from .. import a\ndef g(): pass\n")        # sub.b -> a
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from probe import d\n")
    (pkg / "d.py").write_text("import probe.c\n")
    graph = import_graph(tmp_path, ("probe",))
    assert graph["probe.a"] == {"probe.sub", "probe.sub.b"}      # its own package is already running
    assert cycles(graph) == [["probe.a", "probe.sub", "probe.sub.b"]]
    assert "probe.d" not in graph["probe.c"]


LAYERS = (  # lowest first: a module may import its own layer and those below, never one above
    ("core types", ("engine", "engine.types", "engine.rotations", "engine.camera", "engine.native", "engine.jobs",
                    "engine.device",
                    "engine.atomic")),
    ("head model and binding", ("engine.headmodel", "engine.binding", "engine.expressions")),
    ("render", ("engine.render", "engine.metrics", "engine.io", "engine.residual")),
    ("avatar and generators", ("engine.animate", "engine.generator", "engine.render.turntable", "engine.web",
                               "engine.headmodel.preview")),
    ("pipelines", ("engine.track", "engine.refine", "engine.drive", "engine.eval", "engine.train",
                   "engine.metrics.face", "engine.headmodel.fit_face")),
    ("API", ("engine.service", "engine.bench")),
    ("front ends", ("spatialavatar_app",)),
)
"""Where each module sits: the longest matching prefix decides (`engine.metrics.face` reads faces
with the tracker; the head model's contact sheet renders plain avatars)."""

UPWARD_ALLOWED = {
    ("engine.device", "engine.render"): "the resolver decides CUDA by rendering a test frame with it",
    ("engine.device", "engine.render.select"): "the same: it asks the registry for the CUDA renderer",
}
"""The one upward edge, with its reason: the device is named once, at the bottom, for everyone."""


def layer_of(module: str) -> int:
    best = max(((len(p), i) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes
                if module == p or module.startswith(p + ".")), default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer of LAYERS")
    return best[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
            for m, deps in sorted(graph.items()) for d in sorted(deps)
            if layer_of(d) > layer_of(m) and (m, d) not in UPWARD_ALLOWED]


def test_every_module_imports_only_its_own_layer_and_those_below():
    bad = upward_imports(import_graph(ROOT))
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_layer_check_sees_an_upward_import_inside_a_function(tmp_path):
    pkg = tmp_path / "engine"
    (pkg / "generator").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "generator" / "__init__.py").write_text("")
    (pkg / "types.py").write_text("def f():\n    from engine.generator import g\n")
    (pkg / "generator" / "g.py").write_text("from engine import types\n")
    assert upward_imports(import_graph(tmp_path, ("engine",))) == [
        "engine.types (core types) imports engine.generator (avatar and generators)",
        "engine.types (core types) imports engine.generator.g (avatar and generators)"]


APP_USES = {  # what the desktop app may import of the engine, and why
    "engine.service": "the engine's API: the avatar, its pose and view, builds, refines, drives, exports, presets",
    "engine.types": "the data it shows (Frame, Camera, Avatar)",
    "engine.expressions": "the pose sliders' table and Pose, shared with the web page",
    "engine.camera": "the orbit view's defaults",
    "engine.jobs": "Cancelled, the shape of every long job",
    "engine.generator.registry": "GeneratorChoice, the --generator option's value",
    "engine.headmodel.openhead": "load_head_model, to start the service",
    "engine.generator.plain": "the plain avatar the windows open on before the default avatar is ready",
    "engine.render.select": "live_backend: which renderer draws the stage",
    "engine.render.gl_backend": "the stage's own OpenGL splat drawing",
    "engine.io.media": "video file names for drops, and the recorder's MP4 writer",
    "engine.atomic": "writing a screenshot whole or not at all",
}


def test_the_app_reaches_the_engine_through_its_api():
    """The controllers call `engine.service`; the rest of what the app imports of the engine is
    listed in APP_USES with its reason (packages that only run on the way count as their modules)."""
    graph = import_graph(ROOT)
    used = {d for m, deps in graph.items() if m.startswith("spatialavatar_app.app") for d in deps
            if d.startswith("engine") and d not in ("engine", "engine.io", "engine.render", "engine.generator",
                                                     "engine.headmodel")}
    assert used - set(APP_USES) == set()
