"""The code layout's rules, read from the source: one owner of content/ paths, torch only where it belongs."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"
# the content owner and the modules it delegates the on-disk formats to
OWNERS = {"content.py", "markers.py"}
# a file name under content/ joined onto a path, by "/" or inside a string ("x/draft.json")
FILES = (
    r"(draft\.png|draft\.json|work\.json|work\.toml|seed\.txt|seed\.error\.txt|status\.json|preference\.json|\.aiimg)"
)
CONTENT_NAMES = re.compile(rf"""/\s*f?["'][^"']*{FILES}|["'][^"'\s]*/{FILES}["']""")
# joining anything onto a content folder or a folder under it
CONTENT_JOIN = re.compile(
    r"(state_dir|works_dir|drafts_dir|prompts_dir|content_dir|logs_dir|\.folder|content\.root)\s*/"
    r"|(Path|joinpath)\([^)]*(content_dir|content\.root|state_dir|works_dir|drafts_dir)\s*,"
)
NO_TORCH = {"config", "content", "files", "logs", "markers", "recipes", "rounds", "prompts", "sizes", "metadata"}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name not in OWNERS)


def code_lines(path: Path):
    """Lines of code with docstrings and comments blanked: prose may name the files."""
    source = path.read_text(encoding="utf-8")
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    for number, line in enumerate(source.splitlines(), 1):
        if number not in docstrings:
            yield number, line.split("#", 1)[0] if "#" in line and '"' not in line.split("#", 1)[0] else line


def test_no_module_but_the_content_owner_builds_a_path_under_content():
    offences = []
    for path in modules():
        for number, line in code_lines(path):
            if CONTENT_JOIN.search(line) or CONTENT_NAMES.search(line):
                offences.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offences, "ask pipeline.content.Content for these paths:\n" + "\n".join(offences)


def test_the_checker_itself_catches_a_join():
    assert CONTENT_JOIN.search('p = content.state_dir / "x.json"')
    assert CONTENT_NAMES.search('open(folder + "/draft.json")')
    assert CONTENT_NAMES.search('path = base / "works" / wid / "work.json"')
    assert not CONTENT_NAMES.search('log.info("cancelled (seed.txt removed)")')
    assert not CONTENT_JOIN.search("return self.content.preference_path()")
    assert CONTENT_JOIN.search('folder = content.root / "works"')
    assert CONTENT_JOIN.search('p = Path(cfg.content_dir, "drafts")')
    assert not CONTENT_JOIN.search("return self.root / rel")  # output/'s own root


def test_torch_is_imported_only_by_the_generation_modules():
    for name in NO_TORCH:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"torch", "diffusers", "transformers"}, name
    for path in (PACKAGE / "gallery").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(torch|diffusers)", path.read_text(), re.M), path
