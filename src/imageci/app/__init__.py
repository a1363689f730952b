"""The application layer: every operation an interface offers, declared once
(``operations``: typed request and answer, its HTTP route, who may call it), and
the workflows that combine them (``pipeline``: build → publish → test → promote,
here or with a server; ``testing``: a run; ``jobs``: a worker's job).

Interfaces (cli, api, web, feeds, worker) parse, call an operation here and
present what it returns. Below it: policy (the rules, pure), engine (running a
plan), checks, testbeds, build, formats, store, definitions. It never imports an
interface or ``server``."""
