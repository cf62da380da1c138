"""The monitoring stage: is the champion still fit for the traffic it serves?

Pure engines (``reference``, ``drift`` with its ``stattests``, ``performance``) judge a window of logged
predictions without Airflow or MLflow; ``report`` illustrates a drift verdict with Evidently, ``runs`` keeps one
MLflow run per judged day, and ``tasks`` holds the bodies the ``monitor_drift`` and ``evaluate_performance`` DAGs
call. Nothing is re-exported here: import from the module that holds a name.
"""
