"""The query-based black box (threat_model.blackbox.kind=query): the deployed system answers
"rejected" where its detector's score exceeds T, Square and HopSkipJump never count a rejected
query as a success (a system that rejects nothing leaves them exactly as on the bare model, one
that rejects everything leaves them without a single success), HopSkipJump's start pool picks
the nearest accepted image of another class, and the stage's numbers follow their definitions
and are the same with the model on a second device."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from robustctl import metric_keys as keys
from robustctl.attacks import build
from robustctl.composition import compose
from robustctl.errors import ConfigError
from robustctl.inference import predict_labels
from robustctl.threat_models import prepare
from robustctl.threat_models.blackbox import run as blackbox_run
from robustctl.threat_models.context import detector_scores
from robustctl.threat_models.deployed import DeployedSystem
from robustctl.threat_models.query_blackbox import pool_starts
from tests.fake_accelerator import ACCEL, FakeAccelerator


class FixedScore(nn.Module):
    """A stand-in detector giving every query the same score (0: accepted at T = 0.5, 1:
    rejected)."""

    layers = ()

    def __init__(self, score: float):
        super().__init__()
        self.score = score

    def score_probe(self, probe, predictions):
        return torch.full((len(probe.x),), self.score, device=probe.x.device)


class RejectClass(nn.Module):
    """A stand-in detector rejecting every query the model assigns to class ``k``."""

    layers = ()

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def score_probe(self, probe, predictions):
        return (predictions == self.k).float()


def correct_images(target, n=12):
    cfg, model, data = target
    x, y = data.x_test[:200], data.y_test[:200]
    keep = predict_labels(model, x) == y  # in eval mode: the shared model's BN stats stay put
    return model, x[keep][:n], y[keep][:n]


SQUARE = {"queries": 200, "eps": 0.3, "seed": 0}
HSJ = {"queries": 600, "steps": 6, "init_evals": 20, "init_trials": 20, "seed": 0}


@pytest.mark.parametrize(("name", "params"), [("square", SQUARE), ("hsj", HSJ)])
def test_a_system_that_rejects_nothing_is_attacked_as_the_bare_model(target, name, params):
    model, x, y = correct_images(target)
    bare = build(name, model, **params)
    behind = build(name, DeployedSystem(model, FixedScore(0.0), threshold=0.5), **params)
    a, b = bare(x, y), behind(x, y)
    assert a.success.any()  # the attack does something on this model
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(bare.last_queries, behind.last_queries)


@pytest.mark.parametrize(("name", "params"), [("square", SQUARE), ("hsj", HSJ)])
def test_a_system_that_rejects_everything_gives_no_success(target, name, params):
    """Every answer is "rejected": Square spends its whole budget on every image (it never
    stops on a success) and HopSkipJump never finds a start (no adversarial point at all)."""
    model, x, y = correct_images(target)
    system = DeployedSystem(model, FixedScore(1.0), threshold=0.5)
    attack = build(name, system, **params)
    attack(x, y)
    assert system.queries > 0 and system.rejected == system.queries
    if name == "square":
        assert (attack.last_queries == params["queries"]).all()
        assert (build(name, model, **params)(x, y).success).any()  # bare: it succeeds
    else:
        assert torch.isinf(attack.last_norms).all()


def test_hsj_never_returns_a_point_the_system_rejects(target):
    """A detector that rejects one class: HopSkipJump's adversarial points never land in it,
    although on the bare model some of them do."""
    model, x, y = correct_images(target, n=20)
    bare = build("hsj", model, **HSJ)(x, y)
    landed = bare.pred[bare.success]
    k = int(landed.mode().values)  # the class the bare attack lands in most
    system = DeployedSystem(model, RejectClass(k), threshold=0.5)
    attack = build("hsj", system, **HSJ)
    result = attack(x, y)
    found = torch.isfinite(attack.last_norms) & (attack.last_norms > 0)
    assert found.any()
    assert (result.pred[found] != k).all() and (result.pred[found] != y[found]).all()


def test_the_start_pool_gives_the_nearest_accepted_image_of_another_class():
    """Checked against a brute-force loop: for each image, the nearest pool image whose answer is
    another class and is not rejected; the image itself where there is none."""

    class Linear(nn.Module):
        logit_sign = 1.0

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 3)

        def layer_outputs(self, x, names):
            return {"embedding": x.flatten(1)}

    torch.manual_seed(0)
    model = Linear()
    pool, x = torch.rand(40, 1, 2, 2), torch.rand(6, 1, 2, 2)
    with torch.no_grad():
        answers = model.head(pool.flatten(1)).argmax(1)
        y = model.head(x.flatten(1)).argmax(1)
    y[5] = 7  # a label no pool image has: every pool image is "another class"
    rejected_class = int(answers[0])
    system = DeployedSystem(model, RejectClass(rejected_class), threshold=0.5)
    starts, found = pool_starts(system, pool, x, y, batch_size=16)
    assert system.queries == len(pool)
    for i in range(len(x)):
        best, best_d = None, float("inf")
        for j in range(len(pool)):
            if answers[j] != y[i] and answers[j] != rejected_class:
                d = float((pool[j] - x[i]).norm())
                if d < best_d:
                    best, best_d = j, d
        assert bool(found[i]) == (best is not None)
        assert torch.equal(starts[i], pool[best] if best is not None else x[i])


def query_cfg(cfg, **blackbox):
    tm = dataclasses.replace(
        cfg.threat_model,
        stages=["blackbox"],
        num_samples=30,
        attack_params={"square": {"queries": 100, "eps": 0.3}, "hsj": dict(HSJ)},
        blackbox=dataclasses.replace(cfg.threat_model.blackbox, kind="query", **blackbox),
    )
    return dataclasses.replace(cfg, threat_model=tm)


@pytest.fixture(scope="module")
def queried(target):
    cfg, model, data = target
    cfg = query_cfg(cfg, start_pool=200)
    ctx = prepare(cfg, model, data)
    return ctx, blackbox_run(ctx)


def test_the_stage_counts_successes_the_system_gives_away(queried):
    """Points: the images the system answers correctly and accepts (from the clean pass); a
    success is an example it misclassifies and accepts, with the detector's own scores."""
    ctx, result = queried
    m = result.metrics
    threshold = m[keys.BLACKBOX_SYSTEM_THRESHOLD]
    pred, scores = detector_scores(ctx.model, ctx.detector, ctx.x, 64)
    points = int(((pred == ctx.y) & (scores <= threshold)).sum())
    assert 0 < points < len(ctx.y) + 1
    for name in ("square", "hsj"):
        key = lambda metric, a=name: keys.attack_key(keys.BLACKBOX, a, metric)  # noqa: E731
        assert m[key(keys.POINTS)] == points
        assert 0 <= m[key(keys.SUCCESS_RATE)] <= 1
        assert m[key(keys.ci_low(keys.SUCCESS_RATE))] <= m[key(keys.SUCCESS_RATE)]
        assert 0 <= m[key(keys.REJECTED_QUERY_RATE)] <= 1
        assert m[key(keys.QUERIES_PER_POINT)] > 0
    assert m[keys.attack_key(keys.BLACKBOX, "hsj", keys.START_POOL_QUERIES)] == 200
    assert m[keys.attack_key(keys.BLACKBOX, "hsj", keys.POOL_START_RATE)] > 0
    assert m[keys.attack_key(keys.BLACKBOX, "hsj", keys.SUCCESS_RATE)] > 0
    assert not any(k.startswith("blackbox/cw_wb") for k in m)  # kind=query: no transfer


@pytest.mark.slow  # the query attacks twice: ~10 s
def test_the_stage_reports_the_cpu_numbers_from_the_device(target, queried):
    cfg, model, data = target
    cfg = query_cfg(cfg, start_pool=200)
    with FakeAccelerator():
        accel = blackbox_run(prepare(cfg, copy.deepcopy(model).to(ACCEL), data))
    timeless = lambda m: {k: v for k, v in m.items() if not k.endswith("seconds")}  # noqa: E731
    assert timeless(accel.metrics) == pytest.approx(
        timeless(queried[1].metrics), rel=0, abs=0, nan_ok=True
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("threat_model.blackbox.kind=proxy", "kind: must be one of transfer, query, both"),
        ("threat_model.blackbox.query_attacks=[pgd]", "query_attacks: must be distinct names"),
        ("threat_model.blackbox.fpr=0", "fpr: must lie in"),
        ("threat_model.blackbox.start_pool=0", "start_pool: must be >= 1"),
    ],
)
def test_bad_query_settings_name_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        compose(["threat_model=blackbox", override])


def test_queries_leave_the_model_and_its_mode_as_they_were(target):
    """The system answers in eval mode (its batch-norm statistics do not move) and an attack on
    it hands the model back in the mode it had."""
    model, x, y = correct_images(target)
    was = model.training
    try:
        model.train()
        before = copy.deepcopy(model.state_dict())
        system = DeployedSystem(model, FixedScore(0.0), threshold=0.5)
        system.answer(x)
        build("square", system, **SQUARE)(x, y)
        assert model.training
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        model.eval()
        build("square", DeployedSystem(model, FixedScore(0.0), threshold=0.5), **SQUARE)(x, y)
        assert not model.training
    finally:
        model.train(was)
