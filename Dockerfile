# Evergreen's image, used by every Airflow service and the MLflow server of docker-compose.yaml.
#   docker build -t evergreen:latest .
# The official Airflow image brings the entrypoint (waits for the database, migrates it, creates the admin user),
# the unprivileged `airflow` user and tini/dumb-init; on top of it go the project's pinned stack and the package.
FROM apache/airflow:3.3.2-python3.11

# The stack exactly as tested: requirements.txt pins apache-airflow itself, so pip cannot move Airflow. It also pins
# what MLflow's basic-auth app needs (the mlflow[auth] extra: Flask-WTF, and WTForms under it): the compose stack's
# MLflow service runs this image with `mlflow server --app-name basic-auth` (checked by tests/test_compose.py).
COPY --chown=airflow:0 requirements.txt /opt/evergreen/requirements.txt
RUN pip install --no-cache-dir -r /opt/evergreen/requirements.txt

# Only production needs these: PostgreSQL drivers (Airflow metadata DB, MLflow backend store, the SQL store on
# PostgreSQL) and the FAB auth manager. requirements.txt is the constraint, so none of them can change a tested
# pin (checked with `pip install --dry-run -c requirements.txt`).
RUN pip install --no-cache-dir -c /opt/evergreen/requirements.txt \
        "apache-airflow-providers-fab==3.10.2" \
        "apache-airflow-providers-postgres==7.1.1" \
        "psycopg2-binary==2.9.13"

# The checkout's layout under AIRFLOW_HOME=/opt/airflow: dags/ and plugins/ are Airflow's default folders there, and
# the editable install makes `evergreen` importable in every process (Kubeflow local components too) while its
# REPO_ROOT still points at /opt/airflow, where include/ (configs, pipeline definitions) lives.
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
RUN pip install --no-cache-dir --no-deps -e /opt/airflow
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/

# Mount points of the compose volumes, owned by the airflow user so named volumes start writable.
USER root
RUN mkdir -p /data/home /data/lake /data/landing /mlflow/artifacts \
    && chown -R airflow:0 /data /mlflow
USER airflow

# No EVERGREEN_EMBEDDED here: in this image a missing Connection is an error that names it, never an embedded default.
ENV EVERGREEN_CONFIG_DIR=/opt/airflow/include/config \
    EVERGREEN_HOME=/data/home \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
