"""DAG integrity, generic over every file in dags/: Airflow parses them without import errors; every DAG has tags,
an explicit schedule, doc_md and retries >= 2 on every task; and no DAG file pulls a heavy library in at parse
time (checked in a fresh interpreter per file, so nothing the test session imported can hide it).

The checks are plain functions over a folder; the probe tests at the end run them on small DAG files written to a
temp folder, good and bad, so each check is shown to pass a conforming DAG and to catch a broken one.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
# What a DAG file must not import at module level, directly or through a module it imports at parse time.
HEAVY = ("numpy", "pandas", "scipy", "sklearn", "mlflow", "evidently", "kfp", "pymongo", "pyarrow")


def dag_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


DAG_FILES = dag_files(DAGS)


def parse(folder: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(folder))


def _dag_calls(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in ("dag", "DAG"):
                calls.append(node)
    return calls


def schedule_problems(path: Path) -> tuple[list[str], bool]:
    """Problems with how ``path`` passes ``schedule``, and whether it says ``schedule=None`` explicitly."""
    tree = ast.parse(path.read_text(), filename=str(path))
    problems, explicit_none = [], False
    for call in _dag_calls(tree):
        names = {kw.arg for kw in call.keywords}
        if None in names:  # **kwargs: the schedule may be in there; the timetable check below still applies
            continue
        if "schedule" not in names:
            problems.append(f"{path.name}:{call.lineno}: @dag(...) without an explicit schedule=")
        for kw in call.keywords:
            if kw.arg == "schedule" and isinstance(kw.value, ast.Constant) and kw.value.value is None:
                explicit_none = True
    return problems, explicit_none


def dag_problems(dag, path: Path) -> list[str]:
    """Convention breaches of one parsed DAG (empty when it conforms)."""
    from airflow.sdk.definitions.timetables.simple import NullTimetable

    problems = []
    if not dag.tags:
        problems.append(f"{dag.dag_id}: no tags")
    if not (dag.doc_md or "").strip():
        problems.append(f"{dag.dag_id}: no doc_md (pass doc_md=__doc__ and give the file a docstring)")
    for task in dag.tasks:
        if (task.retries or 0) < 2:
            problems.append(f"{dag.dag_id}.{task.task_id}: retries={task.retries}; use dag_common.default_args")
    schedule, explicit_none = schedule_problems(path)
    problems += schedule
    # schedule=None is only right for a DAG started by hand, and then it must be written out.
    if isinstance(dag.timetable, NullTimetable) and not explicit_none:
        problems.append(f"{dag.dag_id}: no schedule (write schedule=None explicitly for a manual-only DAG)")
    return problems


_HEAVY_SCRIPT = r"""
import json, sys, traceback
heavy = set(json.loads(sys.argv[2]))
first_import = {}

class _Spy:
    # Records who imports a heavy package first; never loads anything itself.
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in first_import and top not in sys.modules:
            frames = [f for f in traceback.extract_stack()[:-1]
                      if "importlib" not in f.filename and "site-packages/airflow/" not in f.filename]
            first_import[top] = [f"{f.filename}:{f.lineno}" for f in frames[-4:]]
        return None

from airflow.dag_processing.dagbag import DagBag
before = sorted(m for m in heavy if m in sys.modules)
sys.meta_path.insert(0, _Spy())
bag = DagBag(sys.argv[1])
after = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({"before": before, "after": after, "via": first_import,
                  "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}}))
"""


def heavy_imports(path: Path) -> dict:
    """Parse one DAG file in a fresh interpreter, as the DAG processor does, and list the heavy modules it loaded."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", _HEAVY_SCRIPT, str(path), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Airflow itself must not preload any of them, or the check below could not tell who imported what.
    assert result["before"] == [], f"Airflow's DagBag already imports {result['before']}; update HEAVY"
    return result


# --- the project's DAGs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project_dagbag():
    if not DAG_FILES:
        pytest.skip("dags/ has no DAG files yet")
    return parse(DAGS)


def test_dagbag_has_no_import_errors(project_dagbag):
    assert project_dagbag.import_errors == {}
    assert project_dagbag.dags, "dags/ has files but Airflow found no DAG in them"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dags_follow_the_conventions(project_dagbag, path):
    dags = [d for d in project_dagbag.dags.values() if Path(d.fileloc).resolve() == path.resolve()]
    assert dags, f"{path.name} defines no DAG; import errors: {project_dagbag.import_errors}"
    problems = [p for dag in dags for p in dag_problems(dag, path)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_library_at_parse_time(path):
    result = heavy_imports(path)
    assert result["import_errors"] == {}
    assert result["after"] == [], f"{path.name} imports at parse time: {json.dumps(result['via'], indent=1)}"


# --- the checks themselves, on probe DAGs in a temp folder -----------------------------------------------

GOOD = '''
"""Probe: a DAG written the project's way."""
from airflow.sdk import dag, task
from evergreen import dag_common
from evergreen.config import get_config

for _model in get_config().models.values():
    @dag(dag_id=f"probe_{_model.name}", schedule=dag_common.daily(_model.schedules.ingest_feedback),
         start_date=dag_common.start_date(_model), catchup=False, tags=["evergreen", _model.name],
         default_args=dag_common.default_args(_model), doc_md=__doc__)
    def _probe():
        @task
        def work():
            import pandas  # inside the task: fine

            return len(pandas.__version__)

        work()

    _probe()
'''

MANUAL = '''
"""Probe: a manual-only DAG says schedule=None out loud."""
import datetime as dt
from airflow.sdk import dag, task

@dag(dag_id="probe_manual", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
     catchup=False, tags=["evergreen"], default_args={"retries": 2}, doc_md=__doc__)
def probe_manual():
    @task
    def work():
        return 1

    work()

probe_manual()
'''

BAD = """
import datetime as dt
import pandas as pd  # heavy, at module level
from airflow.sdk import dag, task

@dag(dag_id="probe_bad", start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), default_args={"retries": 1})
def probe_bad():
    @task
    def work():
        return len(pd.__version__)

    work()

probe_bad()
"""


def _folder(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_checks_pass_conforming_probe_dags(tmp_path):
    folder = _folder(tmp_path, **{"good.py": GOOD, "manual.py": MANUAL})
    bag = parse(folder)
    assert bag.import_errors == {}
    assert set(bag.dags) == {"probe_churn", "probe_manual"}
    for dag in bag.dags.values():
        assert dag_problems(dag, Path(dag.fileloc)) == []
    for path in dag_files(folder):
        assert heavy_imports(path)["after"] == []


def test_checks_catch_a_broken_probe_dag(tmp_path):
    folder = _folder(tmp_path, **{"bad.py": BAD})
    bag = parse(folder)
    problems = dag_problems(bag.dags["probe_bad"], folder / "bad.py")
    assert "probe_bad: no tags" in problems
    assert any(p.startswith("probe_bad: no doc_md") for p in problems)
    assert any(p.startswith("probe_bad.work: retries=1") for p in problems)
    assert any("bad.py:6: @dag(...) without an explicit schedule=" in p for p in problems)
    assert any(p.startswith("probe_bad: no schedule") for p in problems)

    result = heavy_imports(folder / "bad.py")
    assert "pandas" in result["after"] and "numpy" in result["after"]
    assert any("bad.py:3" in frame for frame in result["via"]["pandas"])


def test_heavy_import_through_a_helper_module_is_caught(tmp_path):
    # The rule covers modules a DAG file imports at parse time, not only the file itself.
    helper = tmp_path / "helpers"
    helper.mkdir()
    (helper / "probe_helper_mod.py").write_text("import sklearn\nSTEP = 1\n")
    folder = _folder(tmp_path, **{"indirect.py": GOOD.replace(
        "from evergreen.config import get_config",
        f"from evergreen.config import get_config\nimport sys\nsys.path.insert(0, {str(helper)!r})\n"
        "import probe_helper_mod",
    )})
    result = heavy_imports(folder / "indirect.py")
    assert "sklearn" in result["after"]
    assert any("probe_helper_mod.py:1" in frame for frame in result["via"]["sklearn"])
