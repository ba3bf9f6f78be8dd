"""Server options from flags, environment variables and a TOML config file, in that precedence, parsed by
the real quiver-router / quiver-shard commands (click contexts built, no server started)."""
from __future__ import annotations

import logging

import click
import pytest

import router.__main__ as router_main
import shard.__main__ as shard_main
from quiver.server_options import log_effective_options


def context(command: click.Command, args: list[str]) -> click.Context:
    return command.make_context(command.name or "cmd", args)


def test_a_flag_beats_the_environment_which_beats_the_config_file_which_beats_the_default(tmp_path, monkeypatch):
    config = tmp_path / "router.toml"
    config.write_text('etcd = "10.0.0.1:2379"\nport = 7001\nmax-queued-searches = 7\nslow_rpc_ms = 250.0\n')
    monkeypatch.setenv("QUIVER_ROUTER_PORT", "7002")
    monkeypatch.setenv("QUIVER_ROUTER_MAX_QUEUED_SEARCHES", "8")
    ctx = context(router_main.main, ["--config", str(config), "--max-queued-searches", "9"])
    assert ctx.params["etcd_endpoints"] == "10.0.0.1:2379"  # file (and it satisfies a required option)
    assert ctx.params["port"] == 7002  # environment over file
    assert ctx.params["max_queued_searches"] == 9  # flag over environment
    assert ctx.params["slow_rpc_ms"] == 250.0  # file, key with underscores
    assert ctx.params["max_concurrent_rpcs"] == 4096  # default


def test_every_option_reads_its_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("QUIVER_SHARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QUIVER_SHARD_LEASE_TTL", "9.5")
    ctx = context(shard_main.main, [])
    assert str(ctx.params["data_dir"]) == str(tmp_path) and ctx.params["lease_ttl"] == 9.5
    names = [p for p in shard_main.main.params if isinstance(p, click.Option) and p.name != "config"]
    assert all(p.envvar and p.envvar.startswith("QUIVER_SHARD_") for p in names)


def test_an_unknown_key_in_the_config_file_is_refused_by_name(tmp_path):
    config = tmp_path / "shard.toml"
    config.write_text('data-dir = "/data"\nsearch_thread = 4\n')
    with pytest.raises(click.BadParameter, match="unknown option.*search_thread"):
        context(shard_main.main, ["--config", str(config)])


def test_a_config_file_that_does_not_parse_is_refused(tmp_path):
    config = tmp_path / "shard.toml"
    config.write_text("data-dir = \n")
    with pytest.raises(click.BadParameter, match="cannot read"):
        context(shard_main.main, ["--config", str(config)])


def test_the_effective_options_are_logged_with_their_sources(tmp_path, monkeypatch, caplog):
    config = tmp_path / "router.toml"
    config.write_text('etcd = "e:2379"\n')
    monkeypatch.setenv("QUIVER_ROUTER_PORT", "7005")
    ctx = context(router_main.main, ["--config", str(config), "--host", "0.0.0.0"])
    with caplog.at_level(logging.INFO, logger="quiver.options"):
        log_effective_options(ctx)
    (record,) = [r for r in caplog.records if r.getMessage() == "effective options"]
    options = record.options  # type: ignore[attr-defined]
    assert options["etcd_endpoints"] == {"value": "e:2379", "from": "config file"}
    assert options["port"] == {"value": 7005, "from": "environment"}
    assert options["host"] == {"value": "0.0.0.0", "from": "commandline"}
    assert options["max_queued_searches"]["from"] == "default"
