"""Options of the server processes from three places, with one precedence: a command-line flag, then an
environment variable (the flag's name after a prefix: `--data-dir` of quiver-shard is QUIVER_SHARD_DATA_DIR),
then a TOML config file (`--config FILE`, keys as the flags without their dashes: `data-dir = "/data"`),
then the built-in default. Click resolves the first three itself (its default map holds the file's values);
`log_effective_options` logs every value and where it came from at start-up.
"""
from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
_log = logging.getLogger("quiver.options")


def _read_config_file(ctx: click.Context, _: click.Parameter, path: Path | None) -> Path | None:
    if path is None:
        return None
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise click.BadParameter(f"cannot read {path}: {error}") from None
    by_flag = {flag_name(p): p.name for p in ctx.command.params if isinstance(p, click.Option) and p.name}
    unknown = sorted(key for key in values if key.replace("_", "-") not in by_flag or key in ("config",))
    if unknown:
        raise click.BadParameter(f"{path}: unknown option(s) {', '.join(unknown)}; the keys are the flags of --help without their dashes")
    settings = {by_flag[key.replace("_", "-")]: value for key, value in values.items()}
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return path


def flag_name(option: click.Option) -> str:
    """An option's long flag without its dashes: `--data-dir` -> "data-dir" (the config file's key)."""
    longs = [o for o in option.opts if o.startswith("--")]
    return (longs[0] if longs else option.opts[0]).lstrip("-")


def with_environment(command: click.Command, prefix: str) -> click.Command:
    """Every option but --config also from the environment: PREFIX_FLAG_NAME (shown by --help)."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "config":
            param.envvar = f"{prefix}_{flag_name(param).upper().replace('-', '_')}"
            param.show_envvar = True
    return command


def config_file_option(command: F) -> F:
    """`--config FILE`: processed first (eager), so the file's values are defaults for every other option."""
    return click.option(
        "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), callback=_read_config_file,
        is_eager=True, expose_value=False, help="TOML file of options (flags and environment variables override it).",
    )(command)


def log_effective_options(ctx: click.Context) -> None:
    """One log event with every option's value and its source (commandline, environment, default_map, default)."""
    values = {}
    for param in ctx.command.params:
        if param.name is None or not param.expose_value:
            continue
        source = ctx.get_parameter_source(param.name)
        value = ctx.params.get(param.name)
        values[param.name] = {"value": str(value) if isinstance(value, Path) else value,
                              "from": "config file" if source and source.name == "DEFAULT_MAP" else (source.name.lower() if source else "?")}
    _log.info("effective options", extra={"options": values})
