"""`imageci ci gitlab|github REF`: a version's tests as another CI system's jobs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from imageci.cli.context import console, handle_errors

ci_app = typer.Typer(help="A version's tests as jobs of another CI system (GitLab child pipeline, GitHub "
                     "Actions matrix); each job runs `imageci run` against the server.", no_args_is_help=True)
RefArg = Annotated[str, typer.Argument(help="NAME[:CHANNEL], NAME@VERSION or sha256:<digest>")]
TestbedOpt = Annotated[list[str] | None, typer.Option("--testbed", help="testbed (repeatable; default: the "
                                                      "suite's)")]


def register(app: typer.Typer) -> None:
    app.add_typer(ci_app, name="ci")


@ci_app.command("gitlab")
@handle_errors
def gitlab(ref: RefArg, testbed: TestbedOpt = None,
           server_url: Annotated[str | None, typer.Option("--server-url", metavar="URL", help="written as "
                                                          "IMAGECI_SERVER (default: the server asked, if any; "
                                                          "else the runners' CI/CD variable)")] = None,
           tags: Annotated[bool, typer.Option("--tags", help="each job asks for runners tagged "
                                              "imageci-<testbed>, imageci-arch-<arch> (and imageci-gpu/kvm)")]
           = False) -> None:
    """Print a GitLab CI child pipeline: one job per test × testbed, each running `imageci run REF TEST`
    against the server and uploading its JUnit report (`trigger: include: artifact:` runs it)."""
    from imageci.app.ciplans import PlanArgs, gitlab_pipeline, plan_op
    from imageci.cli.sources import Server, source

    src = source()
    server = server_url or (src.client.remote.url if isinstance(src, Server) else None)
    plan = src.call(plan_op, PlanArgs(ref=ref, testbed=testbed))
    console.print(gitlab_pipeline(plan, server=server, tags=tags), end="", markup=False,
                  highlight=False, soft_wrap=True)


@ci_app.command("github")
@handle_errors
def github(ref: RefArg, testbed: TestbedOpt = None,
           max_jobs: Annotated[int, typer.Option("--max-jobs", help="at most this many matrix jobs (GitHub takes "
                                                 "256); past it, a testbed's tests are shared out over shards")]
           = 256) -> None:
    """Print a GitHub Actions matrix (JSON, for `strategy.matrix: ${{ fromJSON(...) }}`): one entry per test ×
    testbed with the `imageci run` command line it runs."""
    from imageci.app.ciplans import PlanArgs, github_matrix, plan_op
    from imageci.cli.sources import source

    print(json.dumps(github_matrix(source().call(plan_op, PlanArgs(ref=ref, testbed=testbed)), max_jobs), indent=1))
