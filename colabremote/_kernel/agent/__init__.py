"""The agent: colabremote's small remote half, installed once per connection in the kernel.

Its modules reach the kernel as ONE source text, run there as the module ``_colabremote_agent``:
:func:`agent_source` joins ``wire``, ``framing``, ``objects``, ``shipping``, ``streams``,
``loop`` and ``detached`` in that order and drops their imports of each other, whose names the
earlier modules then define in the same text. So an agent module imports only the standard
library and cloudpickle, imports from its siblings only as ``from .module import name``, and
defines no top-level name another agent module defines.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from types import ModuleType

from .. import wire
from . import detached, framing, loop, objects, shipping, streams

__all__ = ["HELLO_EXPRESSION", "agent_source", "install_code"]

#: In dependency order: each module imports only from the ones before it.
_BUNDLED: tuple[ModuleType, ...] = (wire, framing, objects, shipping, streams, loop, detached)

#: A user expression, evaluated right after the install, that returns the kernel's facts as JSON.
HELLO_EXPRESSION = f"__import__({wire.AGENT_MODULE!r}).hello_json()"


@functools.cache
def agent_source() -> str:
    """The agent as one module's source text, the same for every kernel (built once)."""
    pieces = [
        '"""colabremote\'s agent, bundled from colabremote/_kernel/wire.py and agent/*.py."""\n\n',
        "from __future__ import annotations\n",
    ]
    defined: set[str] = set()
    for module in _BUNDLED:
        pieces.append(_bundled_text(module, defined))
    return "".join(pieces)


def _bundled_text(module: ModuleType, defined: set[str]) -> str:
    """One module's source without its docstring and package imports; adds its names to
    ``defined``, and refuses an import of a name not defined yet or a name defined twice."""
    if module.__file__ is None:
        raise RuntimeError(f"{module.__name__} has no source file to bundle")
    path = Path(module.__file__)
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, str(path))
    dropped: set[int] = set()
    own: set[str] = set()
    for index, node in enumerate(tree.body):
        is_docstring = (
            index == 0
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        )
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            for alias in node.names:
                if alias.asname is not None or alias.name not in defined:
                    raise RuntimeError(
                        f"{path.name}: 'from {'.' * node.level}{node.module or ''} import "
                        f"{alias.name}' cannot be bundled; import a name an earlier agent module "
                        "defines, without renaming it"
                    )
        elif not is_docstring and not (
            isinstance(node, ast.ImportFrom) and node.module == "__future__"
        ):
            own |= _top_level_names(node)
            continue
        dropped.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    clash = own & defined
    if clash:
        raise RuntimeError(f"{path.name} defines {sorted(clash)} again; agent modules share one")
    defined |= own
    lines = text.splitlines(keepends=True)
    kept = "".join(line for number, line in enumerate(lines, 1) if number not in dropped)
    return f"\n\n# -- {path.parent.name}/{path.name} " + "-" * 60 + "\n" + kept


def _top_level_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    return {target.id for target in targets if isinstance(target, ast.Name)}


def install_code(comm_id: str, chunk_size: int) -> str:
    """Code for one ``execute_request`` that installs the agent on a comm with id ``comm_id``.

    The agent opens that comm from the kernel's side and sends at most ``chunk_size`` bytes of
    binary data per comm message.
    """
    return (
        "def __colabremote_install(source):\n"
        "    import sys, types\n"
        "    if sys.version_info < (3, 10):\n"
        "        raise RuntimeError('colabremote needs Python 3.10+ in the kernel, not '\n"
        "                           + sys.version.split()[0])\n"
        f"    module = types.ModuleType({wire.AGENT_MODULE!r})\n"
        f"    module.__file__ = {wire.AGENT_FILENAME!r}\n"
        f"    sys.modules[{wire.AGENT_MODULE!r}] = module\n"
        f"    exec(compile(source, {wire.AGENT_FILENAME!r}, 'exec'), module.__dict__)\n"
        f"    module.install({comm_id!r}, {chunk_size})\n"
        f"__colabremote_install({agent_source()!r})\n"
        "del __colabremote_install\n"
    )
