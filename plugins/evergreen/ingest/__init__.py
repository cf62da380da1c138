"""Ground-truth ingestion: landed outcome files become validated outcomes in the store and labelled examples in
the lake.

``read`` finds and reads the landed files, ``contract`` validates them against the model's contract, ``join``
matches outcomes with the logged predictions, and ``tasks`` holds the run the ``ingest_feedback_<model>`` DAG
calls (``python -m evergreen.ingest`` runs the same from a shell).
"""
