"""The training stage: decide whether to retrain, then prepare -> train -> evaluate -> register a candidate.

Whether: :mod:`~evergreen.train.policy` (pure retrain rules) and :mod:`~evergreen.train.tasks` (the retrain DAG's
task bodies: facts from the store, registry and lake; the decision record; the candidate event).

How, one concern a module, each called by a step of the Kubeflow training pipeline (:mod:`~evergreen.train.steps`,
which also runs them in one process):

- :mod:`~evergreen.train.data` reads the labelled lake partitions of the window ``[start, end)``, fails fast on
  bad input, splits train/holdout by a hash of the request id and fingerprints the training content;
- :mod:`~evergreen.train.spec` builds the scikit-learn ``Pipeline`` from the model config (a
  ``ColumnTransformer`` over the declared features, then ``training.estimator`` with the run's hyper-parameters
  over the config's) and fits it;
- :mod:`~evergreen.train.evaluate` scores the holdout with a bootstrap interval and per slice, against
  ``training.sanity_floor``;
- :mod:`~evergreen.train.modelio` saves and loads models with skops and a platform trust list, never pickle;
- :mod:`~evergreen.train.register` logs the model to MLflow and creates a candidate version with its lineage.
"""
