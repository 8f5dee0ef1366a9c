"""The layout's own rules (README "Architecture"), which no linter checks: short functions, and package
``__init__`` files that hold their folder's one-line job and no code. The import layers are checked by
lint-imports in scripts/test.sh."""
import ast
from pathlib import Path

ARENA = Path(__file__).resolve().parent.parent / "arena"
MAX_LINES = 60


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_in_arena_is_over_sixty_lines():
    """Proves every function and method in arena/, nested ones included, spans at most 60 lines from its
    ``def`` to its last line."""
    long = [f"{path.relative_to(ARENA.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(ARENA.rglob("*.py")) for node in _functions(ast.parse(path.read_text()))
            if node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert not long, "split these by what they do:\n" + "\n".join(long)


def test_every_capability_folder_says_its_job_and_holds_no_code():
    """Proves each package under arena/ has an __init__.py that is a docstring and nothing else, so importing
    one module never runs a folder's other modules."""
    inits = sorted(p for p in ARENA.rglob("__init__.py") if p.parent != ARENA)
    assert len(inits) >= 10
    for path in inits:
        body = ast.parse(path.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and body[0].value.value.strip(), f"{path}: only a docstring saying the folder's job"
