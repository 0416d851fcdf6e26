"""Property tests: any override either composes to a valid config or raises the clean
ConfigError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustctl.composition import compose
from robustctl.errors import ConfigError

NUMERIC_KEYS = {
    "trainer.lr": lambda v: v > 0,
    "trainer.momentum": lambda v: 0 <= v < 1,
    "trainer.weight_decay": lambda v: v >= 0,
    "trainer.gamma": lambda v: 0 < v <= 1,
    "dataset.val_fraction": lambda v: 0 <= v < 1,
}
INT_KEYS = {
    "trainer.epochs": lambda v: v >= 1,
    "trainer.batch_size": lambda v: v >= 1,
    "model.width": lambda v: v >= 1,
    "dataset.train_limit": lambda v: v > 0,
}
values = st.one_of(st.floats(-10, 10, allow_nan=False), st.integers(-5, 5))
texts = st.text(alphabet="abcxyz_019.-", min_size=1, max_size=8)
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(key=st.sampled_from(sorted(NUMERIC_KEYS)), value=values)
def test_numeric_ranges_are_accepted_exactly_when_valid(key, value):
    try:
        _, cfg = compose([f"{key}={value}"])
    except ConfigError as exc:
        assert key in str(exc)
        assert not NUMERIC_KEYS[key](float(value))
    else:
        group, leaf = key.split(".")
        assert getattr(getattr(cfg, group), leaf) == value
        assert NUMERIC_KEYS[key](float(value))


@SETTINGS
@given(key=st.sampled_from(sorted(INT_KEYS)), value=st.integers(-3, 300))
def test_integer_ranges(key, value):
    try:
        compose([f"{key}={value}"])
        assert INT_KEYS[key](value)
    except ConfigError as exc:
        assert key in str(exc) and not INT_KEYS[key](value)


@SETTINGS
@given(
    group=st.sampled_from(["dataset", "model", "loss", "attack", "defense", "threat_model"]),
    option=texts,
)
def test_arbitrary_option_names_give_a_clean_error_or_a_real_option(group, option):
    try:
        _, cfg = compose([f"{group}={option}"])
    except ConfigError as exc:
        assert group in str(exc)
    else:
        assert getattr(cfg, group).name == option


@SETTINGS
@given(key=texts, value=texts)
def test_arbitrary_keys_never_crash(key, value):
    try:
        compose([f"trainer.{key}={value}"])
    except ConfigError:
        pass
