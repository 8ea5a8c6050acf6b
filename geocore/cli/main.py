"""The `geocore` command: one typer app, subcommands registered by their own modules."""

from __future__ import annotations

import importlib
import sys

import typer

from geocore.data.text import readable
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
    "geocore.cli.data",
    "geocore.cli.calibrate",
    "geocore.cli.cells",
    "geocore.cli.train",
    "geocore.cli.weights",
    "geocore.cli.locate",
    "geocore.cli.refs",
    "geocore.cli.index",
    "geocore.cli.explain",
    "geocore.cli.report",
]

for _name in SUBCOMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes become one line on stderr and a non-zero exit."""
    try:
        app(args=argv, prog_name="geocore")  # click prints usage errors itself and exits
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except GeocoreError as err:
        typer.echo(f"error: {readable(err)}", err=True)  # messages quote names: shown, never run by the terminal
        return err.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
