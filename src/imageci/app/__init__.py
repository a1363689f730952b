"""The application layer: every operation an interface offers (CLI today; the API,
dashboard and workers next), taking and returning typed objects.

Interfaces parse, call one function here and present what it returns; the
plan, the gate and the verdict rules live below this layer and are called
only from here. Modules: ``session`` (settings, catalog, store, this
process's owner), ``versions`` (what a version carries), ``building``,
``planning`` and ``testing`` (a run), ``gating`` (gate, promote, prune),
``pipeline``, ``queries`` (images, results, events, flaky) and ``upkeep``
(verify, gc, doctor).
"""
