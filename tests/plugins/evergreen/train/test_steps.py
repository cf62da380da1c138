"""evergreen.train.steps: the pipeline definition, compiled from the package.
"""

from __future__ import annotations

import pytest

from evergreen.train import steps


def test_pipeline_module_compiles_from_the_package(tmp_path):
    path = steps.compile_training_pipeline(tmp_path / "training.yaml")
    assert "evergreen-training" in open(path).read()
