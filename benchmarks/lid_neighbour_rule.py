"""LID's test-time neighbour rule: how far the old rule's detector ranks images like the new one.

Old rule (robustctl before this change): the k nearest reference points, leaving out only a point
at distance exactly 0 (and, at fit, the reference row of an example's own clean image). New rule
(Ma et al.'s ``mle_batch``, robustctl now): always drop the nearest, use neighbours 2..k+1. The
old rule is re-implemented here (numpy, float64); the new one is ``LIDDetector`` itself.

Setup: a ResNet-8 (width 8) trained with Adam on the 8x8 ``digits`` (``--epochs``), one LID
detector fitted by ``LIDDetector.fit_on`` (default config but ``--fit-samples``: all five
layers, k = 20, a reference of 100 training images, clean / noisy / FGSM eps 0.1 training
examples). The old rule gets the same reference, the same fit set (the same clean, noisy and
adversarial images) and its own logistic regression. Both score the clean test images and their
FGSM (eps 0.1) adversarial examples.

Printed: the Spearman rank correlation of the two rules' detector scores (headline: on the clean
test images; also on clean + adversarial), of their per-layer LID estimates on the clean test
images, and each rule's detection AUC (clean vs adversarial test images, all pairs).

    PYTHONPATH=. .venv/bin/python benchmarks/lid_neighbour_rule.py            # ~30 s, 2 CPUs
    PYTHONPATH=. .venv/bin/python benchmarks/lid_neighbour_rule.py --quick    # fewer images
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import train_digits_resnet8, write_record
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from robustctl.data import DatasetConfig, load_dataset
from robustctl.defenses.base import FitInputs, crafted_pairs, layer_outputs
from robustctl.defenses.lid import MAX_MEAN_LOG_RATIO, LIDConfig, LIDDetector
from robustctl.defenses.regression import LogisticCombiner
from robustctl.inference import ModelOutputs
from robustctl.threat_models.context import crafter


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 epochs, 200 fit images")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--fit-samples", type=int, default=500)
    p.add_argument("--eps", type=float, default=0.1, help="FGSM step, fit and test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", default=None, help="record path (default reports/bench/...)")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.fit_samples = 3, 200
    return args


def old_rule_lid(f: np.ndarray, ref: np.ndarray, k: int, own_row: np.ndarray) -> np.ndarray:
    """[N] the old rule: the k nearest of ``ref`` leaving out points at distance exactly 0 and
    the row ``own_row`` names (-1: none)."""
    sq = ((f[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    left_out = sq == 0
    named = np.nonzero(own_row >= 0)[0]
    left_out[named, own_row[named]] = True
    sq = np.where(left_out, np.inf, sq)
    nearest = np.sort(sq, axis=1)[:, :k]
    logs = np.log(nearest + np.finfo(np.float64).tiny)
    mean_log_ratio = 0.5 * (logs - logs[:, -1:]).mean(1)
    return -1.0 / np.minimum(mean_log_ratio, MAX_MEAN_LOG_RATIO)


def own_rows(images: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """[N] the reference row holding the same image (bit for bit) as each image, or -1."""
    where = {img.numpy().tobytes(): j for j, img in enumerate(reference)}
    return np.array([where.get(img.numpy().tobytes(), -1) for img in images])


def old_rule_features(model, det, x, ref_x, ref_feats) -> np.ndarray:
    """[N, L] per-layer LID of images ``x`` under the old rule."""
    rows = own_rows(x, ref_x)
    with torch.no_grad():
        feats = layer_outputs(model, x, det.layers, 256)
    cols = [
        old_rule_lid(feats[n].double().numpy(), ref_feats[n].double().numpy(), det.k, rows)
        for n in det.layers
    ]
    return np.stack(cols, 1)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = load_dataset(DatasetConfig(name="digits"))
    model = train_digits_resnet8(data, args.epochs, args.seed)
    craft = crafter(model, 256)
    generator = torch.Generator().manual_seed(args.seed)
    inputs = FitInputs(model, data, ModelOutputs(model, data, 256), 256, generator, craft)
    cfg = LIDConfig(fit_samples=args.fit_samples, fit_attack_params={"eps": args.eps})
    det = LIDDetector(cfg).fit_on(inputs)  # the new rule

    # the old rule on the same reference and fit set (fit_on's draws, replayed)
    ref_x = data.x_train[det.reference_rows]
    ref_feats = {n: det.reference(n) for n in det.layers}
    replay = torch.Generator().manual_seed(args.seed)
    torch.randperm(len(data.x_train), generator=replay)  # the reference draw
    clean, adv, _, _ = crafted_pairs(inputs, cfg)
    delta = (adv - clean).flatten(1).norm(dim=1)
    noise = torch.randn(clean.shape, generator=replay, dtype=clean.dtype)
    scale = delta / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
    noisy = (clean + noise * scale.view(-1, 1, 1, 1)).clamp(0, 1)
    fit_sets = [clean, noisy, adv]
    old_fit = np.concatenate([old_rule_features(model, det, s, ref_x, ref_feats) for s in fit_sets])
    labels = torch.cat([torch.zeros(2 * len(clean)), torch.ones(len(adv))])
    old_combiner = LogisticCombiner().fit(torch.from_numpy(old_fit), labels, c=cfg.lr_c)
    new_fit = torch.cat([det.lid_features_of(model, s) for s in fit_sets]).double()
    refit = LogisticCombiner().fit(new_fit, labels, c=cfg.lr_c)  # replay check: det's weights
    replay_gap = float((refit.weight - det.combiner.weight.cpu()).abs().max())

    x_test = data.x_test
    x_adv = craft("fgsm", {"eps": args.eps}, x_test, data.y_test)
    scores, lids = {}, {}
    for name, x in (("clean", x_test), ("adversarial", x_adv)):
        new_lid = det.lid_features_of(model, x).double()
        old_lid = torch.from_numpy(old_rule_features(model, det, x, ref_x, ref_feats))
        lids[name] = (old_lid.numpy(), new_lid.numpy())
        with torch.no_grad():
            scores[name] = (old_combiner(old_lid).numpy(), det.combiner(new_lid).numpy())

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        return float(spearmanr(a, b).statistic)

    both = [np.concatenate([scores["clean"][i], scores["adversarial"][i]]) for i in (0, 1)]
    y = np.r_[np.zeros(len(x_test)), np.ones(len(x_adv))]
    results = {
        "spearman_score_clean": rho(*scores["clean"]),
        "spearman_score_clean_and_adversarial": rho(*both),
        "spearman_lid_clean": {
            n: rho(lids["clean"][0][:, j], lids["clean"][1][:, j]) for j, n in enumerate(det.layers)
        },
        "auc_old_rule": float(roc_auc_score(y, both[0])),
        "auc_new_rule": float(roc_auc_score(y, both[1])),
        "fit_pairs": float(det.fit_pairs),
        "test_images": len(x_test),
        "replay_weight_gap": replay_gap,
        "seconds": time.perf_counter() - start,
    }
    print(f"test images: {len(x_test)} clean + {len(x_adv)} FGSM eps {args.eps}")
    print(f"fit pairs: {int(det.fit_pairs)}; replay of the fit, weight gap {replay_gap:.1e}")
    print("per-layer LID, clean test images, Spearman old vs new rule:")
    for n, r in results["spearman_lid_clean"].items():
        print(f"  {n:<10} {r:.4f}")
    both_rho = results["spearman_score_clean_and_adversarial"]
    print(f"detector score, clean + adversarial, Spearman old vs new rule: {both_rho:.4f}")
    print(
        f"AUC clean vs FGSM: old rule {results['auc_old_rule']:.4f}, "
        f"new rule {results['auc_new_rule']:.4f}"
    )
    print(f"spearman(score, clean test) = {results['spearman_score_clean']:.4f}")
    settings = {k: v for k, v in vars(args).items() if k != "json"} | {"device": "cpu"}
    write_record("lid_neighbour_rule", settings, results, args.json)


if __name__ == "__main__":
    main()
