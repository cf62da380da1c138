"""``dag_run.conf`` and Params never reach a shell: a static scan of the code Airflow runs (dags/*.py,
plugins/evergreen/**/*.py) and of the Kubeflow pipeline definitions (include/pipelines/*.py, whose parameters come
from the run's Params).

Today there is no shell anywhere in it, and these tests keep it so:

* no ``BashOperator`` / ``@task.bash`` / ``bash_command`` (a templated shell line: a Param in it is code);
* no ``os.system``, ``os.popen``, ``subprocess.getoutput`` / ``getstatusoutput``, ``asyncio.create_subprocess_shell``;
* no ``shell=True`` (or any ``shell=`` that is not the constant ``False``) in any call;
* every ``subprocess`` call passes an argument list -- a list literal, or a name bound only to list literals in the
  same function -- never a string; no argument list starts with a shell and ``-c`` (``["sh", "-c", ...]``); and no
  element of one comes from the run's context (``conf``, ``params``, ``dag_run``, ``context``, ...) or holds a Jinja
  ``{{``. The one caller today is the kfp local runner, which hands the pipeline's arguments to its child in a JSON
  file, never on the command line;
* the rerun command an alert suggests (the one place a Param meets a command line: a person pastes it) is built by
  ``evergreen.notifiers.alert.shell_command`` (``shlex.join``) and nowhere by hand.

Each rule is checked against a bad example too, so a rule that stopped matching would fail here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "dags").glob("*.py"), *(REPO / "plugins" / "evergreen").rglob("*.py"),
                  *(REPO / "include" / "pipelines").glob("*.py")])

SHELL_OPERATORS = {"BashOperator", "BashSensor", "SSHOperator"}
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("asyncio", "create_subprocess_shell")}
ARGV_CALLS = {("subprocess", name) for name in ("run", "Popen", "call", "check_call", "check_output")}
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "/usr/bin/env"}
# What a task's context hands over: a value from any of these is the run's (a person's) input.
UNTRUSTED = {"conf", "params", "dag_run", "context", "kwargs", "ti", "task_instance", "templates_dict", "run_conf"}


@dataclass(frozen=True)
class Finding:
    rule: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: [{self.rule}] {self.what}"


def _dotted(node: ast.AST) -> tuple[str, ...]:
    """``os.system`` -> ("os", "system"); ``system`` -> ("system",); anything else -> ()."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return tuple(reversed(parts))
    return ()


class _Scan(ast.NodeVisitor):
    def __init__(self, name: str, tree: ast.Module) -> None:
        self.name = name
        self.found: list[Finding] = []
        self.aliases: dict[str, tuple[str, str]] = {}  # `from subprocess import run as r` -> r: (subprocess, run)
        self.scopes: list[ast.AST] = [tree]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = (node.module.split(".")[-1], alias.name)
                    if alias.name in SHELL_OPERATORS or node.module.endswith(".operators.bash"):
                        self._add("shell-operator", node, f"imports {alias.name} from {node.module}")

    def _add(self, rule: str, node: ast.AST, what: str) -> None:
        self.found.append(Finding(rule, f"{self.name}:{getattr(node, 'lineno', 0)}", what))

    def _callee(self, call: ast.Call) -> tuple[str, ...]:
        dotted = _dotted(call.func)
        if len(dotted) == 1 and dotted[0] in self.aliases:
            return self.aliases[dotted[0]]
        return dotted[-2:] if len(dotted) >= 2 else dotted

    # --- scopes: a name's bindings are looked up in the function that uses it ---------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if _dotted(target)[-2:] == ("task", "bash"):
                self._add("shell-operator", decorator, f"@task.bash on {node.name}")
        self.scopes.append(node)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def _bindings(self, name: str) -> list[ast.AST]:
        values = []
        for node in ast.walk(self.scopes[-1]):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                values.append(node.value)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name) \
                    and node.target.id == name and node.value is not None:
                values.append(node.value)
        return values

    # --- the rules ----------------------------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in SHELL_OPERATORS:
            self._add("shell-operator", node, node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in SHELL_OPERATORS:
            self._add("shell-operator", node, _dotted(node) and ".".join(_dotted(node)) or node.attr)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg == "bash_command":
            self._add("shell-operator", node.value, "bash_command=")
        if node.arg == "shell" and not (isinstance(node.value, ast.Constant) and node.value.value is False):
            self._add("shell-true", node.value, f"shell={ast.unparse(node.value)}")
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values):
            if isinstance(key, ast.Constant) and key.value == "command":
                if not (isinstance(value, ast.Call) and _dotted(value.func)[-1:] == ("shell_command",)):
                    self._add("rerun-unquoted", value,
                              f"'command': {ast.unparse(value)[:80]} is not shell_command(...)")
        self.generic_visit(node)

    def visit_List(self, node: ast.List | ast.Tuple) -> None:
        first = node.elts[0] if node.elts else None
        if isinstance(first, ast.Constant) and first.value in SHELLS and any(
                isinstance(e, ast.Constant) and e.value == "-c" for e in node.elts[1:]):
            self._add("argv-shell", node, f"{ast.unparse(node)[:80]} runs a shell")
        self.generic_visit(node)

    visit_Tuple = visit_List

    def visit_Call(self, node: ast.Call) -> None:
        callee = self._callee(node)
        if callee in SHELL_CALLS:
            self._add("shell-call", node, ".".join(callee))
        if callee in ARGV_CALLS:
            argv = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            self._check_argv(node, ".".join(callee), argv)
        self.generic_visit(node)

    def _check_argv(self, call: ast.Call, callee: str, argv: ast.AST | None) -> None:
        if argv is None:
            self._add("argv-list", call, f"{callee}() without an argument list")
            return
        lists = [argv]
        if isinstance(argv, ast.Name):
            lists = self._bindings(argv.id)
            if not lists:
                self._add("argv-list", call, f"{callee}({argv.id}): {argv.id} is not bound in this function")
                return
        for value in lists:
            if not isinstance(value, (ast.List, ast.Tuple)):
                self._add("argv-list", call, f"{callee}({ast.unparse(value)[:60]}) is not an argument list")
                continue
            for element in value.elts:
                for sub in ast.walk(element):
                    if isinstance(sub, ast.Name) and sub.id in UNTRUSTED:
                        self._add("argv-untrusted", call, f"{callee}: argument {ast.unparse(element)[:60]} uses "
                                                          f"{sub.id}")
                    elif isinstance(sub, ast.Attribute) and sub.attr in UNTRUSTED:
                        self._add("argv-untrusted", call, f"{callee}: argument {ast.unparse(element)[:60]} uses "
                                                          f".{sub.attr}")
                    elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and "{{" in sub.value:
                        self._add("argv-untrusted", call, f"{callee}: argument {sub.value[:60]!r} is a template")


RULES = ("shell-operator", "shell-call", "shell-true", "argv-list", "argv-shell", "argv-untrusted", "rerun-unquoted")


def scan(name: str, source: str) -> list[Finding]:
    tree = ast.parse(source, filename=name)
    visitor = _Scan(name, tree)
    visitor.visit(tree)
    return visitor.found


def _argv_calls(name: str, source: str) -> list[str]:
    """Where the file starts a process with an argument list (the ARGV_CALLS), as "name:line callee"."""
    tree = ast.parse(source, filename=name)
    visitor = _Scan(name, tree)
    return [f"{name}:{n.lineno} {'.'.join(visitor._callee(n))}" for n in ast.walk(tree)
            if isinstance(n, ast.Call) and visitor._callee(n) in ARGV_CALLS]


# --- the code as it is -------------------------------------------------------------------------------------------


def test_the_scan_covers_the_dags_the_plugins_and_the_pipelines():
    names = {str(p.relative_to(REPO)) for p in SOURCES}
    assert {"dags/retrain.py", "dags/promote.py", "dags/rollback.py", "plugins/evergreen/operators/kfp_local.py",
            "plugins/evergreen/notifiers/alert.py", "include/pipelines/training.py"} <= names
    assert len([n for n in names if n.startswith("dags/")]) >= 7


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_shell_reaches_the_run_input(path):
    assert [str(f) for f in scan(str(path.relative_to(REPO)), path.read_text())] == []


def test_the_only_process_started_is_the_kfp_local_runner_with_an_argument_list():
    """Where a plugin legitimately starts a process, it is known and passes a list (checked by the rules above):
    a new caller shows up here and gets looked at."""
    calls = [c for p in SOURCES for c in _argv_calls(str(p.relative_to(REPO)), p.read_text())]
    assert [c.split(":")[0] + " " + c.split(" ")[1] for c in calls] == [
        "plugins/evergreen/operators/kfp_local.py subprocess.Popen"]


def test_the_rerun_command_quotes_every_part():
    """shell_command is shlex.join: a hostile Param comes back from the shell's own parsing as the one argument it
    was (the alerts' own hostile-input tests: tests/plugins/evergreen/notifiers/test_hostile_alerts.py)."""
    import json
    import shlex

    from evergreen.notifiers.alert import shell_command

    conf = {"version": "3'; rm -rf ~ #", "note": "$(id) `id` && echo pwned > /tmp/x"}
    argv = ["airflow", "dags", "trigger", "rollback_churn", "--conf", json.dumps(conf)]
    assert shlex.split(shell_command(argv)) == argv


# --- the rules catch what they are for -------------------------------------------------------------------------

BAD = [
    ("shell-operator", "from airflow.providers.standard.operators.bash import BashOperator"),
    ("shell-operator", "t = BashOperator(task_id='t', bash_command='echo {{ params.version }}')"),
    ("shell-operator", "from airflow.sdk import task\n@task.bash\ndef run(params=None):\n    return 'echo hi'\n"),
    ("shell-operator", "op = some.operator(task_id='x', bash_command=cmd)"),
    ("shell-call", "import os\ndef f(context):\n    os.system('airflow dags trigger ' + context['params']['dag'])\n"),
    ("shell-call", "import os\nout = os.popen('ls').read()"),
    ("shell-call", "from subprocess import getoutput\nx = getoutput('id')"),
    ("shell-call", "import asyncio\nasync def f():\n    await asyncio.create_subprocess_shell('id')\n"),
    ("shell-true", "import subprocess\nsubprocess.run(['ls'], shell=True)"),
    ("shell-true", "import subprocess\nsubprocess.Popen(['ls'], shell=use_shell)"),
    ("argv-list", "import subprocess\nsubprocess.run('ls -l')"),
    ("argv-list", "import subprocess\ndef f(v):\n    subprocess.check_call(f'kfp run {v}')\n"),
    ("argv-list", "import subprocess\ndef f(v):\n    cmd = 'ls ' + v\n    subprocess.run(cmd)\n"),
    ("argv-list", "from subprocess import check_output as co\nco(' '.join(['a', 'b']))"),
    ("argv-shell", "import subprocess\nsubprocess.run(['sh', '-c', 'echo hi'])"),
    ("argv-shell", "from kfp import dsl\nspec = dsl.ContainerSpec(image='x', command=['bash', '-c'], args=['echo'])"),
    ("argv-untrusted", "import subprocess\ndef f(**context):\n    subprocess.run(['kfp', context['params']['x']])\n"),
    ("argv-untrusted", "import subprocess\ndef f(ti):\n    subprocess.run(['echo', ti.xcom_pull()])\n"),
    ("argv-untrusted", "import subprocess\ndef f(run):\n    subprocess.run(['echo', run.dag_run.conf['v']])\n"),
    ("argv-untrusted", "import subprocess\nsubprocess.run(['echo', '{{ dag_run.conf.v }}'])"),
    ("rerun-unquoted", "rerun = {'argv': argv, 'command': ' '.join(argv)}"),
    ("rerun-unquoted", "rerun = {'command': f\"airflow dags trigger {dag} --conf '{conf}'\"}"),
]

GOOD = [
    "import subprocess, sys\ndef run(self):\n    cmd = [sys.executable, '-m', 'x', '--arguments', str(self.f)]\n"
    "    subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)\n",
    "import subprocess\nsubprocess.run(['airflow', 'dags', 'list'], shell=False, check=True)",
    "rerun = {'argv': argv, 'command': shell_command(argv)}",
    "from evergreen.notifiers.alert import shell_command\nhow = {'command': alert.shell_command(argv)}",
    "params = {'version': Param(None, type=['null', 'string'])}",  # Params exist; only a shell may not take them
    "parts = ['sh', 'ls']",  # a list that starts with "sh" but runs no `-c`
]


@pytest.mark.parametrize("rule,source", BAD, ids=[f"{r}:{i}" for i, (r, _) in enumerate(BAD)])
def test_each_rule_catches_its_bad_example(rule, source):
    found = scan("bad.py", source)
    assert rule in {f.rule for f in found}, [str(f) for f in found]


@pytest.mark.parametrize("source", GOOD, ids=[f"good:{i}" for i in range(len(GOOD))])
def test_the_forms_the_code_uses_pass(source):
    assert [str(f) for f in scan("good.py", source)] == []


def test_every_rule_has_a_bad_example():
    assert sorted({rule for rule, _ in BAD}) == sorted(RULES)
