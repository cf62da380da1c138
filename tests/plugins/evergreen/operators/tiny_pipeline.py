"""Tiny KFP pipelines for the operator tests: fast lightweight components with controllable failures."""

# No `from __future__ import annotations`: kfp reads the annotations as types to build the component specs.

from kfp import compiler, dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def add(a: int, b: int) -> int:
    if a < 0:
        raise ValueError(f"parameter 'a' must be >= 0, got {a}; pass a non-negative number")
    return a + b


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def describe(total: int, report: dsl.Output[dsl.Artifact]) -> str:
    with open(report.path, "w") as fh:
        fh.write(f"total={total}\n")
    report.metadata["total"] = total
    return f"total is {total}"


@dsl.pipeline(name="tiny-add")
def tiny_add(a: int = 1, b: int = 2) -> str:
    total = add(a=a, b=b)
    return describe(total=total.output).outputs["Output"]


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def sleep_with_pid(seconds: float, pid_file: str) -> str:
    import os
    import time

    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


@dsl.pipeline(name="tiny-sleep")
def tiny_sleep(seconds: float = 60.0, pid_file: str = "/tmp/pid") -> str:
    return sleep_with_pid(seconds=seconds, pid_file=pid_file).output


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def hog(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


@dsl.pipeline(name="tiny-hog")
def tiny_hog(megabytes: int = 10) -> int:
    return hog(megabytes=megabytes).output


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def mlflow_user() -> str:
    import hashlib
    import os

    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    return f"{os.environ.get('MLFLOW_TRACKING_USERNAME', '')}:{hashlib.sha256(password.encode()).hexdigest()}"


@dsl.pipeline(name="tiny-env")
def tiny_env(label: str = "") -> str:
    """What a step sees of MLflow's credentials: the user, and a digest of the password (never the password)."""
    return mlflow_user().output


def compile_all(folder) -> dict[str, str]:
    paths = {}
    for name, func in (("add", tiny_add), ("sleep", tiny_sleep), ("hog", tiny_hog), ("env", tiny_env)):
        path = f"{folder}/tiny-{name}.yaml"
        compiler.Compiler().compile(func, path)
        paths[name] = path
    return paths
