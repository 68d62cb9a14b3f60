"""The settings table is the one definition of every training setting: CLI options, API keywords,
validation and the resume rule all follow from it."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from dataclasses import fields

import pytest

import charrnn
from charrnn.cli import cli
from charrnn.errors import CharrnnError
from charrnn.settings import (SAMPLE, TRAIN, TrainConfig, apply_changes, by_name, check_values, config_from_saved,
                              make_config)


def _train_options():
    return {p.name: p for p in cli.commands["train"].params if p.param_type_name == "option"}


def test_every_setting_is_a_train_option_with_its_default_and_vice_versa():
    opts = _train_options()
    names = {s.name for s in TRAIN}
    assert set(opts) - {"resume", "help"} == names - {"corpus"}  # corpus is the command's argument
    for s in TRAIN[1:]:
        assert opts[s.name].default == s.default, s.name
        assert opts[s.name].help == s.help, s.name
        if s.choices:
            assert tuple(opts[s.name].type.choices) == s.choices


def test_every_setting_is_a_field_of_the_config_and_a_keyword_of_the_api():
    assert [f.name for f in fields(TrainConfig)] == [s.name for s in TRAIN]
    params = inspect.signature(charrnn.train).parameters
    assert {s.name for s in TRAIN} <= set(params)
    for s in TRAIN[1:]:
        assert params[s.name].default == s.default


def test_sample_options_come_from_the_sample_table():
    opts = {p.name: p for p in cli.commands["sample"].params}
    for s in SAMPLE:
        assert opts[s.name].default == s.default and opts[s.name].help == s.help


@pytest.mark.parametrize("s", [s for s in TRAIN if s.min is not None], ids=lambda s: s.name)
def test_values_below_the_minimum_are_refused_naming_the_flag(s):
    bad = s.min if s.min_open else s.min - 1
    bad = int(bad) if s.type is int else float(bad)
    with pytest.raises(CharrnnError, match=f"^{s.flag} must "):
        make_config(**{s.name: bad})
    make_config(**{s.name: s.type(s.min + 1 if s.max is None else (s.min + s.max) / 2)})  # inside: accepted


@pytest.mark.parametrize("s", [s for s in TRAIN if s.max is not None], ids=lambda s: s.name)
def test_values_above_the_maximum_are_refused(s):
    with pytest.raises(CharrnnError, match=f"^{s.flag} must be in"):
        make_config(**{s.name: s.max + (0 if s.max_open else 0.5)})


@pytest.mark.parametrize("s", [s for s in TRAIN if s.choices], ids=lambda s: s.name)
def test_choices_are_enforced(s):
    with pytest.raises(CharrnnError, match=f"unknown {s.flag} 'nope'; choose one of {', '.join(s.choices)}"):
        make_config(**{s.name: "nope"})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "3", True, None])
def test_non_numbers_are_refused_for_the_learning_rate(value):
    with pytest.raises(CharrnnError, match="^--lr must be"):
        make_config(lr=value)


def test_unknown_keyword_suggests_the_near_one():
    with pytest.raises(CharrnnError, match="unknown setting 'hiden'; did you mean 'hidden'"):
        make_config(hiden=3)
    with pytest.raises(CharrnnError, match="unknown setting 'zzz'"):
        charrnn.train(zzz=1)


def test_resume_may_change_only_resumable_settings():
    cfg = make_config(hidden=64)
    for s in TRAIN:
        if s.type is bool or s.choices or s.type is str:
            value = (not s.default) if s.type is bool else s.choices[-1] if s.choices else "x"
        else:
            value = (s.default + s.max) / 2 if s.max is not None else s.type((s.default or 1) + 1)
        changed = config_from_saved(cfg.to_dict())
        if s.resumable:
            assert getattr(apply_changes(changed, {s.name: value}), s.name) == value
        elif value != getattr(cfg, s.name):
            with pytest.raises(CharrnnError, match=f"cannot change {s.flag} when resuming"):
                apply_changes(changed, {s.name: value})


def test_saved_settings_from_an_older_version_keep_defaults_and_drop_unknown_keys():
    cfg = config_from_saved({"hidden": 99, "a_removed_setting": 1})
    assert cfg.hidden == 99 and cfg.lr == by_name(TRAIN)["lr"].default


def test_combination_rules():
    with pytest.raises(CharrnnError, match="sum below 1"):
        make_config(val_frac=0.6, test_frac=0.4)
    with pytest.raises(CharrnnError, match="--tie-weights needs --emb equal to --hidden"):
        make_config(tie_weights=True, emb=8, hidden=16)
    with pytest.raises(CharrnnError, match="plain directory name"):
        make_config(name="a/b")


def test_sampling_options_are_checked_by_their_table():
    with pytest.raises(CharrnnError, match=r"--temp must be 0 \(greedy\) or positive"):
        check_values(SAMPLE, {"temp": -1})


@pytest.mark.integration
@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], []])
def test_help_imports_no_torch(args):
    code = ("import sys, time; t = time.perf_counter(); from charrnn.cli import main\n"
            f"try: main({args!r})\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip().splitlines()[-1] == "False", r.stderr
    assert "Usage:" in r.stdout
    assert time.perf_counter() - t0 < 5  # torch alone takes seconds to import; help needs well under one
