"""The ``mmr`` command."""

from __future__ import annotations

import sys
from typing import Any

import click
import psycopg

from ..db import translate_error
from ..errors import ConfigError, InputError, MMRError, NotFoundError
from . import (
    cluster_cmd,  # Citus local cluster (issue 15)
    collection_cmd,
    db_cmd,
    demo_cmd,
    eval_cmd,
    models_cmd,
    plugins_cmd,
    search_cmd,
    serve_cmd,
    server_cmd,
    worker_cmd,
)

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pg_mmretrieval")
def cli() -> None:
    """pg_mmretrieval: multimodal retrieval inside PostgreSQL.

    Every command connects to MMR_DATABASE_URL when it is set, else to the embedded
    PostgreSQL server (started on demand).

    \b
    Example:
      mmr db upgrade
      mmr collection create products public.products --image-column image --text-column caption
      mmr search products clip_image --vector "[0.1, 0.2, ...]"
    """


for _module in (
    server_cmd,
    db_cmd,
    collection_cmd,
    search_cmd,
    eval_cmd,
    plugins_cmd,
    models_cmd,
    worker_cmd,
    serve_cmd,
    demo_cmd,
    cluster_cmd,
):
    _module.register(cli)


def _load_plugin_commands() -> None:
    from ..plugins import call_register_commands

    call_register_commands(cli)


#: errors the user can fix by changing the command or its settings: exit status 2 (as click's
#: usage errors); anything else (a server or plugin failure) exits 1
USER_MISTAKES = (InputError, NotFoundError, ConfigError)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``mmr`` console script: errors print one clear message and exit 2
    for a user's mistake (bad argument, unknown name, bad setting), 1 otherwise."""
    try:
        _load_plugin_commands()
        return cli.main(args=argv, prog_name="mmr", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except MMRError as e:
        _fail(e)
    except psycopg.Error as e:  # one the command did not translate: still one clear message
        _fail(translate_error(e))


def _fail(e: MMRError) -> None:
    """``error: ...`` on stderr and the exit status: a user's mistake is one line (the hint
    joined to it) and exits 2; a failure of the server or a plugin exits 1."""
    if isinstance(e, USER_MISTAKES):
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        message, _, hint = text.partition(" Hint: ")
        click.echo(f"error: {message}" + (f" (hint: {hint})" if hint else ""), err=True)
        sys.exit(2)
    click.echo(f"error: {e}", err=True)
    sys.exit(1)
