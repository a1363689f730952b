"""Executing a plan: tests × testbeds on a local pool (or as Celery jobs, ``fanout``), with retries,
waivers and the result cache (a pass on these bytes and this test content is not run again), each
attempt recorded with its log; ``gc`` removes what dead runs left. Imports ``checks``,
``testbeds``, ``store`` and below."""
