"""The `geocore` command: one typer app, subcommands registered by their own modules."""

from __future__ import annotations

import importlib
import sys

import typer

from geocore.errors import GeocoreError

app = typer.Typer(
    name="geocore",
    help="Worldwide image geo-localization you can see into.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module exposes `register(app)`; the order here is the order in `geocore --help`.
SUBCOMMAND_MODULES = [
    "geocore.cli.score",
    "geocore.cli.evaluate",
    "geocore.cli.cells",
]

for _name in SUBCOMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes become one line on stderr and a non-zero exit."""
    try:
        app(args=argv, standalone_mode=False)
    except GeocoreError as err:
        typer.echo(f"error: {err}", err=True)
        return err.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.ClickException):
            err.show()
            return err.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
