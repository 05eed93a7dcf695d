"""Decision thresholds fitted on val scores (train.fit.thresholds, train.fit.threshold_stats) and the
risk-coverage report (train.evaluate.risk_coverage), against hand-worked numbers; the bagged fit's stability
under resampling of val, against the former fit (middles in probability on all of val)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_runtime.roi import Thresholds
from train.evaluate import risk_coverage
from train.evaluate.report import checkpoint_thresholds
from train.fit.threshold_stats import counterfeits_needed, recall_claim, recall_lower_bound, resample_indices
from train.fit.thresholds import (COUNTERFEIT, GENUINE, LOGIT_LIMIT, MIN_BAND_LOGIT, UNCERTAIN, decision_metrics,
                                  decisions, describe_fit, fit_thresholds, settle)

HALF = MIN_BAND_LOGIT / 2


def lo(p: float) -> float:
    return math.log(p / (1 - p))


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def mid(a: float, b: float) -> float:
    """The middle of two scores in log-odds, as a probability (the hand-worked threshold)."""
    return sig((lo(a) + lo(b)) / 2)


def test_perfectly_separated_scores_get_the_minimum_band():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.01, 0.10, 0.20, 0.80, 0.90, 0.95])
    fit = fit_thresholds(y, p, 0.99, 0.95, n_resamples=0)
    # recall: below 0.80, above the genuine 0.20 -> log-odds middle 0 (p 0.5); precision: the same gap.
    # A closed band (the demo's 0.488 / 0.500) is widened about its centre to MIN_BAND_LOGIT.
    assert fit.thresholds.genuine_at == pytest.approx(sig(-HALF)) and fit.thresholds.counterfeit_at == pytest.approx(sig(HALF))
    assert fit.counterfeit_logit - fit.genuine_logit == pytest.approx(MIN_BAND_LOGIT)
    assert (fit.genuine_method, fit.counterfeit_method) == ("widened", "widened")
    assert (fit.n_genuine, fit.n_counterfeit, fit.allowed_misses) == (3, 3, 0)
    assert fit.val["coverage"] == 1.0 and fit.val["accuracy_decided"] == 1.0 and fit.val["counterfeit_recall"] == 1.0


def test_overlapping_scores_open_an_abstain_band():
    # sorted: g .05 g .10 c .15 g .30 g .40 c .45 c .60 g .70 c .80 c .90 c .95
    y = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1])
    p = np.array([0.05, 0.10, 0.15, 0.30, 0.40, 0.45, 0.60, 0.70, 0.80, 0.90, 0.95])
    fit = fit_thresholds(y, p, 0.99, 0.95, n_resamples=0)
    # 6 counterfeits, 0.99 recall allows floor(0.06) = 0 misses: below .15, above .10 -> middle in log-odds
    assert fit.allowed_misses == 0
    assert fit.thresholds.genuine_at == pytest.approx(mid(0.10, 0.15))  # 0.1228 (0.125 in probability)
    # precision of calls p >= t: at .80 3/3, at .70 3/4 = 0.75 < 0.95 -> lowest is .80; middle to .70
    assert fit.thresholds.counterfeit_at == pytest.approx(mid(0.70, 0.80))
    assert (fit.genuine_method, fit.counterfeit_method) == ("fitted", "fitted")  # 3.08 log-odds apart
    assert fit.val_only == {"genuine_at": fit.thresholds.genuine_at, "counterfeit_at": fit.thresholds.counterfeit_at}
    v = fit.val
    assert v["decided"] == 5 and v["coverage"] == pytest.approx(5 / 11)  # .05 .10 genuine; .80 .90 .95 counterfeit
    assert v["accuracy_decided"] == 1.0 and v["counterfeit_recall"] == pytest.approx(3 / 6)
    assert v["uncertain_genuine"] == 3 and v["uncertain_counterfeit"] == 3 and v["counterfeit_missed"] == 0
    # a lower recall target lets one of 6 counterfeits through: floor(0.2 * 6) = 1 -> between .40 and .45;
    # precision 0.70: lowest .40 (5/7), middle to .30 -> below 0.5, clamped to log-odds 0; the band
    # [mid(.40, .45), 0] is then narrower than MIN_BAND_LOGIT and widened about its centre
    fit80 = fit_thresholds(y, p, 0.80, 0.70, n_resamples=0)
    centre = lo(mid(0.40, 0.45)) / 2
    assert fit80.allowed_misses == 1
    assert fit80.genuine_logit == pytest.approx(centre - HALF) and fit80.counterfeit_logit == pytest.approx(centre + HALF)
    assert (fit80.genuine_method, fit80.counterfeit_method) == ("widened", "widened")


def test_logit_middle_sits_far_from_both_scores():
    # the middle of p 1e-4 (a genuine, at the limit) and 5e-3 (the lowest counterfeit) in log-odds is 7.08e-4:
    # 1.96 log-odds from each; the middle in probability, 2.55e-3, is 0.68 from the counterfeit
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([1e-6, 1e-4, 5e-3, 0.97, 0.99])
    fit = fit_thresholds(y, p, 0.99, 0.95, n_resamples=0)
    assert LOGIT_LIMIT == pytest.approx(lo(1 - 1e-4))
    assert fit.thresholds.genuine_at == pytest.approx(mid(1e-4, 5e-3)) and abs(fit.thresholds.genuine_at - 7.08e-4) < 1e-6
    assert lo(5e-3) - fit.genuine_logit == pytest.approx(fit.genuine_logit - lo(1e-4))
    assert lo(5e-3) - fit.genuine_logit == pytest.approx(1.96, abs=0.01)


def test_twenty_counterfeits_put_genuine_at_below_the_lowest_counterfeit():
    rng = np.random.default_rng(0)
    cf = rng.uniform(0.3, 1.0, 20)
    gen = rng.uniform(0.0, 0.35, 40)
    y, p = np.r_[np.zeros(40), np.ones(20)], np.r_[gen, cf]
    fit = fit_thresholds(y, p, 0.99, 0.95, n_resamples=0)
    assert fit.allowed_misses == 0  # 0.99 of 20 counterfeits: 19.8 -> none may be missed
    assert fit.thresholds.genuine_at < cf.min() and fit.val["counterfeit_missed"] == 0
    # the two middles lie less than MIN_BAND_LOGIT apart here: the band is widened to exactly that
    assert (fit.genuine_method, fit.counterfeit_method) == ("widened", "widened")
    assert fit.counterfeit_logit - fit.genuine_logit == pytest.approx(MIN_BAND_LOGIT)


def test_all_one_class_and_empty_fall_back_per_side():
    only_genuine = fit_thresholds(np.zeros(5), np.linspace(0.1, 0.5, 5))
    assert only_genuine.thresholds == Thresholds()  # nothing informs either side: the old 0.3 / 0.7
    assert (only_genuine.genuine_method, only_genuine.counterfeit_method) == ("default", "default")
    assert only_genuine.recall_claim["lower_bound"] is None and "nothing can be claimed" in only_genuine.recall_claim["text"]
    only_cf = fit_thresholds(np.ones(4), np.array([0.6, 0.7, 0.8, 0.9]), n_resamples=0)
    # genuine_at from the counterfeits alone: below 0.6 with nothing under it -> middle of the limit and 0.6
    assert only_cf.genuine_logit == pytest.approx((-LOGIT_LIMIT + lo(0.6)) / 2) and only_cf.genuine_method == "fitted"
    assert only_cf.thresholds.counterfeit_at == 0.7 and only_cf.counterfeit_method == "default"  # exactly the default
    empty = fit_thresholds([], [])
    assert empty.thresholds == Thresholds() and empty.val == {} and empty.n_counterfeit == 0
    assert empty.resampling["n"] == 0 and empty.expected["out_of_bag"]["coverage"] is None


def test_unreachable_precision_and_clamping_keep_the_order():
    # the top score is a genuine item and the rest alternate: precision 0.95 is met nowhere
    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.99])
    fit = fit_thresholds(y, p, 0.99, 0.95, n_resamples=0)
    assert fit.counterfeit_method == "unreachable" and fit.thresholds.counterfeit_at == pytest.approx(sig(LOGIT_LIMIT))
    # every counterfeit scores high: genuine_at's middle (.8/.9) is above 0.5 and counterfeit_at's (limit/.7)
    # below: both clamped to 0.5, then the closed band widened
    fit = fit_thresholds(np.array([0, 0, 1, 1]), np.array([0.7, 0.8, 0.9, 0.95]), 0.99, 0.5, n_resamples=0)
    assert (fit.genuine_logit, fit.counterfeit_logit) == (pytest.approx(-HALF), pytest.approx(HALF))
    assert fit.thresholds.genuine_at <= 0.5 <= fit.thresholds.counterfeit_at
    assert settle(3.0, -4.0) == (-HALF, HALF, "widened", "widened")
    assert settle(-20.0, 20.0) == (-LOGIT_LIMIT, LOGIT_LIMIT, "clamped", "clamped")
    assert settle(-3.0, 1.0) == (-3.0, 1.0, "", "")
    with pytest.raises(ValueError, match="target recall"):
        fit_thresholds([0, 1], [0.1, 0.9], target_recall=0.0)
    with pytest.raises(ValueError, match="probabilities"):
        fit_thresholds([0, 1], [0.1, 1.5])


def test_tied_scores_count_as_one_threshold():
    # three items tie at 0.9 (two counterfeit, one genuine): a threshold at 0.9 calls all three (2/3)
    y = np.array([0, 1, 1, 0])
    p = np.array([0.2, 0.9, 0.9, 0.9])
    fit = fit_thresholds(y, p, 0.99, 0.95, n_resamples=0)
    assert fit.counterfeit_method == "unreachable"  # 2/3 < 0.95 and no higher threshold exists
    fit = fit_thresholds(y, p, 0.99, 0.6, n_resamples=0)
    # 2/3 >= 0.6 at 0.9: the middle to 0.2 (p 0.6); genuine_at the same middle, clamped to 0; then widened
    centre = lo(mid(0.2, 0.9)) / 2
    assert fit.counterfeit_logit == pytest.approx(centre + HALF)


def former_genuine_at(y: np.ndarray, p: np.ndarray) -> float:
    """The fit before issue 18, for fewer than 100 val counterfeits: the middle in probability between the
    lowest counterfeit and the highest score below it (0 when none), at most 0.5."""
    upper = p[y].min()
    below = p[p < upper]
    return min((below.max() if below.size else 0.0) + upper, 1.0) / 2


def test_bagged_fit_is_stable_under_resampling_of_val():
    """60-image val draws (44 genuine, 16 counterfeit, as few as a real collection has) from one overlapping
    score distribution: the bagged fit's genuine_at moves about half as much, in log-odds, as the former
    fit's, and less than the val-only fit in log-odds (the bagging's share); no fit is closer to 0 or 1 than
    the limit and every band is at least MIN_BAND_LOGIT wide."""
    rng = np.random.default_rng(0)
    former, val_only, bagged = [], [], []
    for draw in range(40):
        z = np.r_[rng.normal(-5, 2, 44), rng.normal(3, 2.5, 16)]
        y, p = np.r_[np.zeros(44, bool), np.ones(16, bool)], 1 / (1 + np.exp(-z))
        former.append(lo(former_genuine_at(y, p)))
        val_only.append(fit_thresholds(y, p, n_resamples=0).genuine_logit)
        fit = fit_thresholds(y, p, n_resamples=100, seed=draw)
        bagged.append(fit.genuine_logit)
        assert -LOGIT_LIMIT <= fit.genuine_logit and fit.counterfeit_logit <= LOGIT_LIMIT
        assert fit.counterfeit_logit - fit.genuine_logit >= MIN_BAND_LOGIT - 1e-9
        assert fit.thresholds.genuine_at <= 0.5 <= fit.thresholds.counterfeit_at
    assert np.std(bagged) < 0.7 * np.std(former)  # measured 0.83 vs 1.55 log-odds
    assert np.std(bagged) < 0.9 * np.std(val_only)
    assert min(former) < -LOGIT_LIMIT + 3 < min(bagged)  # the former fit went as low as p 1e-3 here


def test_bagging_is_seeded_and_resamples_keep_groups_and_classes():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    groups = ["a", "a", "b", "c", "d", "d", "e"]
    first = [i.tolist() for i in resample_indices(y, groups, 20, seed=3)]
    assert first == [i.tolist() for i in resample_indices(y, groups, 20, seed=3)]
    assert first != [i.tolist() for i in resample_indices(y, groups, 20, seed=4)]
    for idx in first:
        g = np.array(groups)[idx]
        # a group comes whole, as often as drawn; 3 genuine groups and 2 counterfeit groups drawn each time
        assert all((g == name).sum() % groups.count(name) == 0 for name in set(groups))
        drawn = {k: sum((g == name).sum() // groups.count(name) for name in names) for k, names in
                 (("genuine", "abc"), ("counterfeit", "de"))}
        assert drawn == {"genuine": 3, "counterfeit": 2}
    p = np.array([0.05, 0.1, 0.2, 0.4, 0.3, 0.8, 0.9])
    a, b = fit_thresholds(y, p, groups=groups, seed=1), fit_thresholds(y, p, groups=groups, seed=1)
    assert a == b and a.resampling["by"] == "group" and a.resampling["n"] == 200


def test_clopper_pearson_lower_bound_matches_known_values():
    assert recall_lower_bound(16, 16) == pytest.approx(0.8293, abs=1e-4)  # 0.05 ** (1 / 16)
    assert recall_lower_bound(299, 299) == pytest.approx(0.9900, abs=1e-4) and recall_lower_bound(299, 299) >= 0.99
    assert recall_lower_bound(298, 298) < 0.99
    assert recall_lower_bound(10, 9) == pytest.approx(0.6058, abs=1e-4)  # the 90% two-sided interval's lower end
    # 38 of 40: the 5% quantile of Beta(38, 3) (checked by integrating its density numerically)
    assert recall_lower_bound(20, 0) == 0.0 and recall_lower_bound(40, 38) == pytest.approx(0.85085, abs=1e-5)
    assert counterfeits_needed(0.99) == 299 and counterfeits_needed(0.95) == 59 and counterfeits_needed(1.0) is None
    claim = recall_claim(16, 16, 0.99)
    assert claim["lower_bound"] == pytest.approx(0.8293, abs=1e-4) and not claim["target_claimable"]
    assert claim["text"] == ("counterfeit recall >= 82.9% with 95% confidence from 16 counterfeits (16 not called "
                             "genuine); the 0.99 target needs >= 299 counterfeits with none called genuine")
    assert recall_claim(299, 299, 0.99)["target_claimable"] and not recall_claim(299, 298, 0.99)["target_claimable"]
    with pytest.raises(ValueError):
        recall_lower_bound(5, 6)


def test_fit_record_has_expected_coverage_error_and_the_claim():
    import json

    rng = np.random.default_rng(1)
    z = np.r_[rng.normal(-4, 2, 30), rng.normal(3, 2, 16)]
    y, p = np.r_[np.zeros(30), np.ones(16)], 1 / (1 + np.exp(-z))
    fit = fit_thresholds(y, p, groups=[f"item{i // 2}" for i in range(46)])
    d = json.loads(json.dumps(fit.to_dict()))  # what best.pt, report.json and the manifest keep
    for where in ("at_thresholds", "out_of_bag"):
        for key in ("coverage", "error_decided", "counterfeit_recall"):
            s = d["expected"][where][key]
            assert 0.0 <= s["low"] <= s["mean"] <= s["high"] <= 1.0 and s["n"] > 100
    # at the fitted thresholds the val resamples centre on the val numbers
    assert d["expected"]["at_thresholds"]["coverage"]["mean"] == pytest.approx(d["val"]["coverage"], abs=0.05)
    caught = 16 - d["val"]["counterfeit_missed"]
    assert d["recall_claim"]["caught"] == caught and d["recall_claim"]["lower_bound"] == recall_lower_bound(16, caught)
    lines = describe_fit(d)
    assert len(lines) == 3 and lines[0].startswith("expected on unseen items") and "200 resamples by group" in lines[0]
    assert lines[2].startswith("recall claim (val): counterfeit recall >= ")


def test_records_from_before_the_bagged_fit_still_load_and_report():
    former = {"thresholds": {"genuine_at": 0.0025, "counterfeit_at": 0.61}, "target_recall": 0.99,
              "target_precision": 0.95, "n_genuine": 23, "n_counterfeit": 16, "allowed_misses": 0,
              "genuine_method": "fitted", "counterfeit_method": "fitted", "val": {}}
    th, info = checkpoint_thresholds({"thresholds": former["thresholds"], "threshold_fit": former})
    assert th == Thresholds(0.0025, 0.61) and "16 counterfeit, 23 genuine val images" in info["source"]
    assert describe_fit(former) == [] and describe_fit(None) == []
    th, info = checkpoint_thresholds({})  # before thresholds were fitted at all
    assert th == Thresholds() and info["fit"] is None


def test_decisions_match_thresholds_decide():
    th = Thresholds(0.25, 0.6)
    p = np.array([0.0, 0.25, 0.2500001, 0.5, 0.6, 0.59999, 1.0])
    codes = {"genuine": GENUINE, "counterfeit": COUNTERFEIT, "uncertain": UNCERTAIN}
    assert decisions(p, th).tolist() == [codes[th.decide(float(x))] for x in p]
    m = decision_metrics(np.array([0, 0, 1, 1, 0, 0, 1]), p, th)
    # genuine: 0.0 (right), 0.25 (right); counterfeit: 0.6 (wrong), 1.0 (right); uncertain: 0.2500001 (cf),
    # 0.5 (cf), 0.59999 (genuine)
    assert (m["decided"], m["errors"], m["coverage"]) == (4, 1, pytest.approx(4 / 7))
    assert m["accuracy_decided"] == pytest.approx(3 / 4) and m["counterfeit_recall"] == pytest.approx(1 / 3)
    assert m["counterfeit_precision"] == pytest.approx(1 / 2) and m["counterfeit_missed"] == 0
    assert (m["uncertain_counterfeit"], m["uncertain_genuine"]) == (2, 1)


def test_risk_coverage_curve_by_hand(tmp_path):
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.05, 0.95, 0.45, 0.40, 0.70, 0.80])
    # |p - 0.5|: .45 (right) .45 (right) .05 (right, 0.45 < 0.5 -> genuine) .10 (wrong) .20 (right) .30 (wrong)
    c = risk_coverage.curve(y, p)
    assert c["half_width"] == pytest.approx([0.05, 0.10, 0.20, 0.30, 0.45])
    assert c["decided"] == [6, 5, 4, 3, 2]
    assert c["errors"] == [2, 2, 1, 1, 0]
    assert c["error"] == pytest.approx([2 / 6, 2 / 5, 1 / 4, 1 / 3, 0.0])
    assert c["coverage"] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6])
    rows = risk_coverage.table(y, p, half_widths=(0.0, 0.25, 0.49))
    assert [r["decided"] for r in rows] == [6, 3, 0]
    assert rows[1]["genuine_at"] == 0.25 and rows[1]["counterfeit_at"] == 0.75
    assert rows[1]["error_decided"] == pytest.approx(1 / 3) and rows[2]["error_decided"] is None
    text = risk_coverage.format_table(rows, fitted=decision_metrics(y, p, Thresholds(0.1, 0.9)))
    assert "| 0.250 / 0.750 | 50.0 | 3/6 | 33.3 (1) |" in text and "**checkpoint** 0.100 / 0.900" in text
    png = tmp_path / "rc.png"
    risk_coverage.draw(c, png, fitted=rows[1], title="test")
    img = cv2.imread(str(png))
    assert img is not None and img.shape == (440, 640, 3)
    assert risk_coverage.curve([], [])["decided"] == []
