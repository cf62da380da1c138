"""How long Airflow takes to parse each DAG file, against the same DAG written with heavy imports at module level.

The figure is the one ``airflow dags report`` prints: Airflow's ``DagBag`` times each file it processes and keeps
it as ``FileLoadStat.duration`` in ``dagbag.dagbag_stats``. Each file is parsed by a fresh interpreter that has
imported Airflow's DagBag but nothing of the project, so no cache of an earlier file hides the import cost of this
one (in one `airflow dags report` process the first file pays for the imports all files share). The median of
``--repeat`` runs is printed. A second column repeats the parse with the Airflow SDK's ``dag``/``task``
already imported: the cost of the file and the project modules it pulls in by themselves, closer to what the DAG
processor's parser (forked from a parent that has Airflow loaded) pays.

The peer is what a user writes without the rule "heavy imports go inside tasks": the same DAG file with
``pandas``, ``sklearn`` and ``mlflow`` imported at module level, generated into a temp folder and parsed the
same way in the same run.

Goal: under 100 ms per file and under 1 s for all of dags/.

    python bench/dag_parse.py [--repeat 3] [--folder dags] [--airflow-report]

``--airflow-report`` also runs the real ``airflow dags report`` (one process for all files, on a throwaway
metadata DB) as a cross-check of the mechanism.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from evergreen.airflow_env import airflow_env
from evergreen.paths import REPO_ROOT

GOAL_FILE_MS = 100.0
GOAL_TOTAL_MS = 1000.0
NAIVE_IMPORTS = "import mlflow\nimport pandas as pd\nfrom sklearn.ensemble import RandomForestClassifier\n"

# Parsed by Airflow's own DagBag, exactly the code path of `airflow dags report`.
_PARSE_ONE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
if sys.argv[2] == "sdk":
    from airflow.sdk import Asset, dag, task  # noqa: F401  Airflow's own DAG machinery, loaded before the clock

bag = DagBag(sys.argv[1])
(stat,) = bag.dagbag_stats
print(json.dumps({"seconds": stat.duration.total_seconds(), "dags": stat.dag_num, "tasks": stat.task_num,
                  "import_errors": {str(k): str(v)[-500:] for k, v in bag.import_errors.items()}}))
"""

# Used only when dags/ has no file yet, so the bench still compares a clean DAG with its naive twin.
_TEMPLATE = '''"""Template DAG (dags/ is empty): one DAG per model, heavy work imported inside the task."""

from __future__ import annotations

from airflow.sdk import dag, task

from evergreen import dag_common
from evergreen.config import get_config

for _model in get_config().models.values():

    @dag(
        dag_id=f"template_{_model.name}",
        schedule=dag_common.daily(_model.schedules.ingest_feedback),
        start_date=dag_common.start_date(_model),
        catchup=False,
        tags=["evergreen", _model.name],
        default_args=dag_common.default_args(_model),
        doc_md=__doc__,
    )
    def _template():
        @task
        def work() -> int:
            import pandas as pd

            return len(pd.DataFrame({"a": [1]}))

        work()

    _template()
'''


def _env(home: Path) -> dict[str, str]:
    # The project's embedded Airflow settings, with every piece of state in a throwaway home.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(airflow_env())
    env["EVERGREEN_HOME"] = str(home)
    env["AIRFLOW_HOME"] = str(home / "airflow")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow' / 'airflow.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def parse_once(path: Path, env: dict[str, str], preload: str = "none") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE_ONE, str(path), preload], capture_output=True, text=True, env=env, timeout=600
    )
    if proc.returncode != 0:
        raise SystemExit(f"parsing {path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(path: Path, env: dict[str, str], repeat: int) -> dict:
    runs = [parse_once(path, env) for _ in range(repeat)]
    result = dict(runs[-1])
    result["ms"] = statistics.median(r["seconds"] for r in runs) * 1000
    # The same parse with the Airflow SDK's decorators already imported: what the file and the project modules it
    # imports cost by themselves (the DAG processor's long-lived parent has Airflow loaded before it forks a parser).
    result["own_ms"] = statistics.median(parse_once(path, env, "sdk")["seconds"] for _ in range(repeat)) * 1000
    return result


def naive_twin(path: Path, folder: Path) -> Path:
    """The same DAG file with pandas, sklearn and mlflow imported at module level (after docstring/__future__)."""
    source = path.read_text()
    tree = ast.parse(source)
    after = 0
    for node in tree.body:
        is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if not (is_doc or is_future):
            break
        after = node.end_lineno or after
    lines = source.splitlines(keepends=True)
    twin = folder / f"naive_{path.name}"
    twin.write_text("".join(lines[:after]) + NAIVE_IMPORTS + "".join(lines[after:]))
    return twin


def airflow_report(folder: Path, env: dict[str, str]) -> list[dict]:
    env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(folder)}
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=env)
    out = subprocess.run([airflow, "dags", "report", "-o", "json"], check=True, capture_output=True, text=True, env=env)
    # Airflow may log warnings to stdout before the JSON; the report is the line that is a JSON list.
    table = next(line for line in reversed(out.stdout.splitlines()) if line.startswith("["))
    return json.loads(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=REPO_ROOT / "dags")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--airflow-report", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="evergreen-dag-parse-") as tmp:
        tmp_path = Path(tmp)
        env = _env(tmp_path / "home")
        files = sorted(p for p in args.folder.glob("*.py") if not p.name.startswith("_"))
        label = f"{args.folder}"
        if not files:
            template_dir = tmp_path / "template"
            template_dir.mkdir()
            (template_dir / "template_dag.py").write_text(_TEMPLATE)
            files = [template_dir / "template_dag.py"]
            label = f"{args.folder} is empty: a template DAG"

        print("DAG parse time, as `airflow dags report` measures it (DagBag FileLoadStat.duration);")
        print(f"fresh interpreter per file, median of {args.repeat} runs; {label}")
        print(f"{'file':<34}{'parse ms':>10}{'SDK preloaded':>15}{'DAGs':>6}{'tasks':>7}   goal < {GOAL_FILE_MS:.0f} ms")
        results = {}
        failed = False
        for path in files:
            r = measure(path, env, args.repeat)
            results[path] = r
            verdict = "ok" if r["ms"] < GOAL_FILE_MS else "MISSED"
            if r["import_errors"]:
                verdict, failed = f"IMPORT ERROR {r['import_errors']}", True
            print(f"{path.name:<34}{r['ms']:>10.1f}{r['own_ms']:>15.1f}{r['dags']:>6}{r['tasks']:>7}   {verdict}")
        total = sum(r["ms"] for r in results.values())
        own_total = sum(r["own_ms"] for r in results.values())
        print(f"{'total':<34}{total:>10.1f}{own_total:>15.1f}{'':>13}   goal < {GOAL_TOTAL_MS:.0f} ms: "
              f"{'ok' if total < GOAL_TOTAL_MS else 'MISSED'}")

        # The peer: the largest DAG file, written naively.
        base = max(files, key=lambda p: results[p]["tasks"])
        peer_dir = tmp_path / "naive"
        peer_dir.mkdir()
        peer = measure(naive_twin(base, peer_dir), env, args.repeat)
        if peer["import_errors"]:
            print(f"peer failed to parse: {peer['import_errors']}")
            return 1
        clean = results[base]["ms"]
        print(f"peer: {base.name} with mlflow, pandas, sklearn imported at module level: "
              f"{peer['ms']:.1f} ms vs {clean:.1f} ms clean ({peer['ms'] / clean:.0f}x slower); "
              f"SDK preloaded {peer['own_ms']:.1f} ms vs {results[base]['own_ms']:.1f} ms")

        if args.airflow_report:
            print("cross-check, `airflow dags report` (one process for all files, so later files share imports):")
            for row in airflow_report(files[0].parent, env):
                h, m, sec = str(row["duration"]).split(":")
                ms = (int(h) * 3600 + int(m) * 60 + float(sec)) * 1000
                print(f"  {row['file']:<32}{ms:>10.1f}  DAGs {row['dag_num']}")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
