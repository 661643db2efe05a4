"""What help() and IDEs see: run(), Container() and exec() list every Config
keyword with its default; Stats carries the limits."""
from __future__ import annotations

import inspect
import pydoc

import attrs
import pytest

import isolate
from isolate.config import Options
from conftest import RUN_TIMEOUT

FIELDS = [f for f in attrs.fields(isolate.Config) if f.init]


def test_options_are_configs_fields():
    assert list(Options.__annotations__) == [f.name for f in FIELDS]


@pytest.mark.parametrize("function", [isolate.run, isolate.Container, isolate.Container.exec,
                                      isolate.exec_in], ids=lambda f: f.__qualname__)
def test_every_config_keyword_is_in_the_signature(function):
    parameters = inspect.signature(function).parameters
    for field in FIELDS:
        parameter = parameters[field.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
        assert parameter.default == default, field.name
        assert parameter.annotation == Options.__annotations__[field.name].__forward_arg__


def test_run_takes_no_other_keywords_and_exec_keeps_its_own():
    assert inspect.Parameter.VAR_KEYWORD not in {
        p.kind for p in inspect.signature(isolate.run).parameters.values()}
    assert "kwargs" in inspect.signature(isolate.Container.exec).parameters


def test_help_shows_the_keywords():
    text = pydoc.render_doc(isolate.run, renderer=pydoc.plaintext)
    for name in ("hostname", "limits", "seccomp", "tty", "mounts"):
        assert f"{name}:" in text


def test_the_signature_is_what_the_code_accepts():
    """Every listed keyword works (an unknown one is still refused)."""
    r = isolate.run(["true"], hostname="sig", tty=False, expose_home=False, timeout=RUN_TIMEOUT)
    assert r.returncode == 0
    with pytest.raises(isolate.ConfigError, match="no_such_keyword"):
        isolate.run(["true"], no_such_keyword=1)


def test_stats_carry_the_limits():
    limits = isolate.CgroupLimit(pids=64)
    with isolate.Container(["sleep", "30"], limits=limits) as c:
        assert c.stats().limits == limits
        c.kill()
        c.wait(timeout=RUN_TIMEOUT)
    assert c.stats().limits == limits   # the last snapshot, after the cgroup is gone


def test_stats_without_limits_say_how_to_get_them():
    with isolate.Container(["true"]) as c:
        with pytest.raises(isolate.CgroupError, match=r"limits=.*CgroupLimit\(\)"):
            c.stats()
