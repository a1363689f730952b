"""`imageci worker`: a Celery worker that runs jobs (an interface: it only wires the Celery task to
``app.jobs``, talking to its server through ``client``)."""
