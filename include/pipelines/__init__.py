"""Kubeflow pipeline definitions (KFP v2 DSL). Each module exposes ``compile_pipeline(path)``."""
