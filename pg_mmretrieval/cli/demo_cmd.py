"""``mmr demo``: the demo world (:mod:`pg_mmretrieval.demo`), imported only when it runs."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["register"]


def register(cli: click.Group) -> None:
    @cli.command("demo")
    @click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("demo-output"),
        show_default=True,
        help="Where to write the HTML results page.",
    )
    @click.option("--rows", default=400, show_default=True, help="Generated images.")
    def demo(out_dir: Path, rows: int) -> None:
        """Run the demo: shapes in a table, embedded by the worker, searched by text, image,
        composed query, hybrid and filter; writes an HTML page with the pictures.

        \b
        Example:
          mmr demo --out demo-output && xdg-open demo-output/index.html
        """
        from ..demo import run_demo

        run_demo(out_dir, n=rows)
