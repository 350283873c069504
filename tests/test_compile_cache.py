"""The persistent compilation cache run.py turns on: where it goes, how to turn it off,
and that a user's own JAX setting wins."""
from train import compile_cache


def test_default_location_and_min_time():
    env = {"HOME": "/home/u"}
    assert compile_cache.enable(env) == "/home/u/.cache/strata/jax"
    assert env["JAX_COMPILATION_CACHE_DIR"] == "/home/u/.cache/strata/jax"
    assert float(env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]) < 1.0  # JAX's default skips most
    env = {"XDG_CACHE_HOME": "/x"}
    assert compile_cache.enable(env) == "/x/strata/jax"


def test_configurable_off_and_user_setting_wins():
    env = {"STRATA_COMPILE_CACHE": "/tmp/c"}
    assert compile_cache.enable(env) == "/tmp/c" and env["JAX_COMPILATION_CACHE_DIR"] == "/tmp/c"
    env = {"STRATA_COMPILE_CACHE": "0"}
    assert compile_cache.enable(env) is None and "JAX_COMPILATION_CACHE_DIR" not in env
    env = {"JAX_COMPILATION_CACHE_DIR": "/mine", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"}
    assert compile_cache.enable(env) == "/mine"
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2"
