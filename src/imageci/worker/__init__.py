"""`imageci worker`: a Celery worker that runs jobs (interfaces layer: it only wires the Celery task to
``app.jobs.run_job``)."""
