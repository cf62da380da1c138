"""Model files: skops only, never pickle, with a trust list fixed by the platform.

A fitted pipeline is saved with skops, and every load trusts only :data:`TRUSTED_TYPES`, not the list the artifact
declares. :func:`load_model` loads a registered version this way; it is the loader to use where
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` (the platform's setting): MLflow 3.17 refuses every sklearn flavour
then, skops included, because a crafted MLmodel file could trust anything.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from evergreen.train.spec import TrainingError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from evergreen.train.register import MlflowTarget

# Types outside skops' defaults that Evergreen models may contain, reviewed by hand: plain data holders of numpy
# and scikit-learn's tree models (linear models, naive Bayes and the feature step need none beyond numpy.dtype).
# A model needing anything else is refused at save time, so the list stored with a version is a subset of this.
TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)


class UntrustedModelError(TrainingError):
    """A model artifact is not a skops file, or holds types outside :data:`TRUSTED_TYPES`."""


def model_bytes(pipeline: Pipeline) -> tuple[bytes, list[str]]:
    """The skops bytes of a fitted pipeline and the minimal list of non-default types it needs trusted."""
    import skops.io as sio

    data = sio.dumps(pipeline)
    needed = sorted(sio.get_untrusted_types(data=data))
    refused = sorted(set(needed) - TRUSTED_TYPES)
    if refused:
        raise UntrustedModelError(
            f"the fitted model contains types Evergreen does not trust: {', '.join(refused)}; review them and add "
            "them to evergreen.train.modelio.TRUSTED_TYPES, or choose another estimator"
        )
    return data, needed


def save_model_file(pipeline: Pipeline, path: str | os.PathLike[str]) -> list[str]:
    """Write the pipeline as a skops file; returns the trusted types it needs."""
    data, needed = model_bytes(pipeline)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return needed


def model_file_types(path: str | os.PathLike[str]) -> list[str]:
    """The non-default types a skops file needs trusted, checked against :data:`TRUSTED_TYPES`."""
    import skops.io as sio

    try:
        needed = sorted(sio.get_untrusted_types(file=str(path)))
    except Exception as exc:  # a pickle or a corrupt file: skops cannot even list its types
        raise UntrustedModelError(
            f"{path}: not a skops model file ({exc}); Evergreen loads only skops models"
        ) from None
    refused = sorted(set(needed) - TRUSTED_TYPES)
    if refused:
        raise UntrustedModelError(
            f"{path}: the model contains types Evergreen does not trust: {', '.join(refused)}; refusing to load it"
        )
    return needed


def load_model_file(path: str | os.PathLike[str]) -> Pipeline:
    """Load a skops file, trusting only :data:`TRUSTED_TYPES` (never what the file itself asks for)."""
    import skops.io as sio

    return sio.load(str(path), trusted=model_file_types(path))


def load_model(model_uri: str, target: MlflowTarget) -> Pipeline:
    """Load a registered sklearn model (``models:/churn/3``) without pickle, whatever the pickle switch says.

    Only skops artifacts are accepted, and only with :data:`TRUSTED_TYPES` -- the trust list inside the
    artifact's MLmodel file is ignored, which is what makes this safe where MLflow's own loader is not.
    """
    import mlflow.artifacts
    import yaml

    from evergreen.train.register import fluent_mlflow  # register builds on this module: import it at call time

    with tempfile.TemporaryDirectory(prefix="evergreen-model-") as tmp, fluent_mlflow(target):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        flavor = (yaml.safe_load((local / "MLmodel").read_text()).get("flavors") or {}).get("sklearn") or {}
        fmt = flavor.get("serialization_format", "pickle")
        if fmt != "skops":
            raise UntrustedModelError(
                f"{model_uri}: saved with serialization format '{fmt}'; Evergreen loads only skops models. "
                "Re-register it through the training pipeline."
            )
        return load_model_file(local / flavor["pickled_model"])
