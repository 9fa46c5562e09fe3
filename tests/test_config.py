"""One configuration object: every option of ``roost serve`` is a field of ServeConfig,
the CLI is built from those fields, and the README documents each of them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.channels import Limits
from roost.cli import main
from roost.config import ServeConfig, options

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_option_is_in_the_cli_and_the_readme() -> None:
    text = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    for name, _, opt in options():
        assert opt.flag in text, f"{name}: {opt.flag} missing from `roost serve --help`"
        assert opt.flag in README, f"{name}: {opt.flag} is not documented in README.md"
        assert opt.env.isupper(), opt.env


def test_defaults_come_from_where_they_are_used() -> None:
    cfg = ServeConfig()
    # The one difference on purpose: a served node budgets each address's joins; an
    # endpoint made in code does not until it says so (channels/limits.py).
    assert cfg.limits() == dataclasses.replace(Limits(), join_rate_per_ip=20.0)
    assert {o.env for _, _, o in options()} >= {"PORT", "NODE", "ROOST_REDIS_URL"}


def test_validation_is_the_configs() -> None:
    with pytest.raises(ValueError, match="--require-token needs a secret"):
        ServeConfig(require_token=True)
    out = CliRunner().invoke(main, ["serve", "--require-token"])
    assert out.exit_code == 2 and "needs a secret" in out.output


def test_environment_variables_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_serve(**given: object) -> None:
        seen.update(given)

    command = main.commands["serve"]
    monkeypatch.setattr(command, "callback", fake_serve)
    monkeypatch.setenv("ROOST_MSG_RATE", "7.5")
    monkeypatch.setenv("ROOST_ALLOWED_ORIGINS", "https://a.example")
    assert CliRunner().invoke(main, ["serve", "--port", "4100"]).exit_code == 0
    assert seen.pop("app_spec") is None  # serve's MODULE:NAME argument, not an option
    cfg = ServeConfig(**seen)  # type: ignore[arg-type]
    assert (cfg.msg_rate, cfg.port, cfg.allowed_origins) == (7.5, 4100, ("https://a.example",))


def test_no_two_options_share_a_flag_or_a_variable() -> None:
    flags = [opt.flag for _, _, opt in options()]
    envs = [opt.env for _, _, opt in options()]
    assert len(flags) == len(set(flags)), sorted(f for f in flags if flags.count(f) > 1)
    assert len(envs) == len(set(envs)), sorted(e for e in envs if envs.count(e) > 1)
