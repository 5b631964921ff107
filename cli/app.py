"""``msvit-edge``: each command parses its options and calls one library function.

The commands live by what they do: ``train`` (``msvit_edge.cli.train``), ``export`` and ``build``
(``msvit_edge.cli.deploy``), ``eval``, ``bench``, ``doctor`` and ``demo`` (``msvit_edge.cli.measure``). This module
holds the Typer app they are registered on, in the order ``--help`` lists them, and the console entry point.
Heavy libraries (torch, onnxruntime, ModelOpt, TensorRT) are imported inside the commands, so ``--help`` works
without any of them installed.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings

import typer

# typer >= 0.29 carries its own click (pyproject's floor); its usage errors are not re-exported at the top
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError

from msvit_edge import __version__
from msvit_edge.cli import deploy, measure, serve
from msvit_edge.cli import train as train_command
from msvit_edge.errors import MsvitEdgeError, first_line
from msvit_edge.io import stop_on, stopped
from msvit_edge.reporting import show

app = typer.Typer(
    help="Train, export and deploy MSViT, a ViT with dynamic mixed-scale tokens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: typer's rich panels render every flag as `--force <bool>`
    context_settings={"max_content_width": 120},  # the terminal's width up to 120 (plain help's default is 80)
)
app.command("train")(train_command.train)
app.command("eval")(measure.eval_)
app.command("export")(deploy.export)
app.command("build")(deploy.build)
app.command("bench")(measure.bench)
app.command("doctor")(measure.doctor)
app.command("demo")(measure.demo)
app.command("triton-repo")(serve.triton_repo)
app.command("serve")(serve.serve)
app.command("loadtest")(serve.loadtest)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"msvit-edge {__version__}")
        raise typer.Exit()


_debug = {"on": False}  # --debug: tracebacks instead of one-line errors


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of any error."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines: only warnings and errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug lines too."),
) -> None:
    """Train, export and deploy MSViT, a ViT with dynamic mixed-scale tokens."""
    _debug["on"] = debug
    show(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def main() -> None:
    """Console entry point: every error is one line on stderr, never a traceback (unless --debug).

    Exit codes: 2 for usage errors (options), 1 for failed work, 128 + 15 after SIGTERM. SIGTERM unwinds like
    Ctrl-C, so atomic outputs remove their temporaries, whatever became of the exception on the way (a library may
    swallow it or turn it into another error).
    """
    stop_on(signal.SIGTERM)
    show()  # the library's progress lines
    warnings.formatwarning = lambda message, *_args, **_kw: f"warning: {message}\n"  # one line, no source path
    try:
        code = app(standalone_mode=False)  # usage errors come here, to be one line like every other error
    except NoArgsIsHelpError as e:
        typer.echo(e.format_message())
        code = 0
    except ClickUsageError as e:
        _fail(e, f"error: {_usage(e)}", 2)
    except MsvitEdgeError as e:
        _fail(e, f"error: {e}", e.exit_code)
    except KeyboardInterrupt as e:
        _fail(e, "interrupted", 130)
    except Exception as e:  # a bug, not the user's input: still one line, and how to see more
        _fail(e, f"error: unexpected {first_line(e)} (rerun with --debug for the traceback)", 1)
    finally:
        if (signum := stopped()) is not None:
            typer.secho("terminated", fg="red", err=True)
            sys.exit(128 + signum)
    if isinstance(code, int) and code:  # a command's typer.Exit(code), e.g. serve's Triton exit status
        sys.exit(code)


def _usage(error: ClickUsageError) -> str:
    """Click's usage error as one line, with where to look: "Invalid value for '--stage': 'gate' is not one of ..."."""
    where = f" (see {error.ctx.command_path} --help)" if error.ctx else ""
    return error.format_message().replace("Value error, ", "") + where


def _fail(error: BaseException, message: str, code: int) -> None:
    if stopped() is not None:
        return  # the finally clause reports the signal
    if _debug["on"]:
        raise error
    typer.secho(message, fg="red", err=True)
    sys.exit(code)
