"""``mmr plugins``: the loaded plugins, their hooks and the encoders they provide."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from ..registry import encoder_origins, list_encoders, list_plugins
from ._common import echo_json, print_table

__all__ = ["register"]


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def plugins_command(as_json: bool) -> None:
    """List plugins, the hooks they implement and the encoders they register.

    MMR_LOAD_PLUGINS=name1,name2 restricts which plugins load (empty: none).

    \b
    Example:
      mmr plugins
      mmr plugins --json | jq '.encoders[].name'
    """
    plugins = list_plugins()
    origins = encoder_origins()
    encoders: list[dict[str, Any]] = [
        {
            "name": name,
            "plugin": origins.get(name),
            "dimension": enc.dimension,
            "modalities": sorted(enc.modalities),
            "model_id": enc.model_id,
        }
        for name, enc in sorted(list_encoders().items())
    ]
    if as_json:
        echo_json({"plugins": [asdict(p) for p in plugins], "encoders": encoders})
        return
    print_table(
        [
            {
                "name": p.name,
                "distribution": f"{p.distribution} {p.version}" if p.distribution else "",
                "hooks": ", ".join(p.hooks),
            }
            for p in plugins
        ],
        ["name", "distribution", "hooks"],
        title="plugins",
    )
    print_table(
        [{**e, "modalities": ", ".join(e["modalities"])} for e in encoders],
        ["name", "plugin", "dimension", "modalities", "model_id"],
        title="encoders",
    )


def register(cli: click.Group) -> None:
    cli.add_command(plugins_command)
