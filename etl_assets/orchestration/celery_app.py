"""The Celery app our workers run: ``celery -A etl_assets.orchestration.celery_app worker``,
started by ``etl-assets worker``.

It is dagster-celery's own app (the same task names the executor sends), configured from the
environment ``etl-assets worker`` sets: the broker's URL, with its password, lives only in that
process's environment. (``dagster-celery worker start`` writes the URL into a Python file under
DAGSTER_HOME, password included; hence this module.)
"""

import os

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from etl_assets.orchestration.executor import BACKEND_ENV, BROKER_ENV, CELERY_SOURCE

app = make_app(
    {
        "broker": os.environ[BROKER_ENV],
        "backend": os.environ.get(BACKEND_ENV, "rpc://"),
        "config_source": dict(CELERY_SOURCE),
    }
)
execute_plan = create_task(app)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
