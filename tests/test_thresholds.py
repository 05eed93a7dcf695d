"""Decision thresholds fitted on val scores (train.fit.thresholds) and the risk-coverage report
(train.evaluate.risk_coverage), against hand-worked numbers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.roi import Thresholds
from train.evaluate import risk_coverage
from train.fit.thresholds import COUNTERFEIT, GENUINE, UNCERTAIN, decision_metrics, decisions, fit_thresholds


def test_perfectly_separated_scores_decide_everything():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.01, 0.10, 0.20, 0.80, 0.90, 0.95])
    fit = fit_thresholds(y, p, 0.99, 0.95)
    # recall: no counterfeit may fall at or below genuine_at -> below 0.80; margin to the genuine 0.20: 0.50
    # precision: every call >= 0.80 is a counterfeit, at 0.20 only 3/4 -> between 0.20 and 0.80: 0.50
    assert fit.thresholds == Thresholds(0.5, 0.5)
    assert (fit.genuine_method, fit.counterfeit_method) == ("fitted", "fitted")
    assert (fit.n_genuine, fit.n_counterfeit, fit.allowed_misses) == (3, 3, 0)
    assert fit.val["coverage"] == 1.0 and fit.val["accuracy_decided"] == 1.0 and fit.val["counterfeit_recall"] == 1.0


def test_overlapping_scores_open_an_abstain_band():
    # sorted: g .05 g .10 c .15 g .30 g .40 c .45 c .60 g .70 c .80 c .90 c .95
    y = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1])
    p = np.array([0.05, 0.10, 0.15, 0.30, 0.40, 0.45, 0.60, 0.70, 0.80, 0.90, 0.95])
    fit = fit_thresholds(y, p, 0.99, 0.95)
    # 6 counterfeits, 0.99 recall allows floor(0.06) = 0 misses: genuine_at below 0.15, above 0.10 -> 0.125
    assert fit.allowed_misses == 0
    assert fit.thresholds.genuine_at == pytest.approx(0.125)
    # precision of calls p >= t: at .80 3/3, at .70 3/4 = 0.75 < 0.95 -> lowest is .80; margin to .70 -> 0.75
    assert fit.thresholds.counterfeit_at == pytest.approx(0.75)
    v = fit.val
    assert v["decided"] == 5 and v["coverage"] == pytest.approx(5 / 11)  # .05 .10 genuine; .80 .90 .95 counterfeit
    assert v["accuracy_decided"] == 1.0 and v["counterfeit_recall"] == pytest.approx(3 / 6)
    assert v["uncertain_genuine"] == 3 and v["uncertain_counterfeit"] == 3 and v["counterfeit_missed"] == 0
    # a lower recall target lets one of 6 counterfeits through: floor(0.2 * 6) = 1 -> below .45, above .40
    fit80 = fit_thresholds(y, p, 0.80, 0.70)
    assert fit80.allowed_misses == 1 and fit80.thresholds.genuine_at == pytest.approx(0.425)
    # precision 0.70: at .60, calls .60 .70 .80 .90 .95 hold 4/5 = 0.8; at .45 5/6; at .40 5/7 = 0.71;
    # at .30 5/8 < 0.7 -> lowest .40, margin to .30 -> 0.35, clamped up to 0.5
    assert fit80.thresholds.counterfeit_at == 0.5 and fit80.counterfeit_method == "clamped"


def test_twenty_counterfeits_put_genuine_at_below_the_lowest_counterfeit():
    rng = np.random.default_rng(0)
    cf = rng.uniform(0.3, 1.0, 20)
    gen = rng.uniform(0.0, 0.35, 40)
    fit = fit_thresholds(np.r_[np.zeros(40), np.ones(20)], np.r_[gen, cf], 0.99, 0.95)
    assert fit.allowed_misses == 0  # 0.99 of 20 counterfeits: 19.8 -> none may be missed
    assert fit.thresholds.genuine_at < cf.min()
    assert fit.val["counterfeit_missed"] == 0
    below = np.r_[gen, cf][np.r_[gen, cf] < cf.min()].max()
    assert fit.thresholds.genuine_at == pytest.approx((below + cf.min()) / 2)


def test_all_one_class_and_empty_fall_back_per_side():
    only_genuine = fit_thresholds(np.zeros(5), np.linspace(0.1, 0.5, 5))
    assert only_genuine.thresholds == Thresholds()  # nothing informs either side: the old 0.3 / 0.7
    assert (only_genuine.genuine_method, only_genuine.counterfeit_method) == ("default", "default")
    only_cf = fit_thresholds(np.ones(4), np.array([0.6, 0.7, 0.8, 0.9]))
    # genuine_at from the counterfeits alone: below 0.6 with nothing under it -> 0.3; precision needs genuines
    assert only_cf.thresholds.genuine_at == pytest.approx(0.3) and only_cf.genuine_method == "fitted"
    assert only_cf.thresholds.counterfeit_at == 0.7 and only_cf.counterfeit_method == "default"
    empty = fit_thresholds([], [])
    assert empty.thresholds == Thresholds() and empty.val == {} and empty.n_counterfeit == 0


def test_unreachable_precision_and_clamping_keep_the_order():
    # the top score is a genuine item and the rest alternate: precision 0.95 is met nowhere
    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.99])
    fit = fit_thresholds(y, p, 0.99, 0.95)
    assert fit.counterfeit_method == "unreachable" and fit.thresholds.counterfeit_at == 1.0
    # every counterfeit scores high: genuine_at would sit at (0.8 + 0.9) / 2 but is clamped to 0.5
    fit = fit_thresholds(np.array([0, 0, 1, 1]), np.array([0.7, 0.8, 0.9, 0.95]), 0.99, 0.5)
    assert fit.thresholds.genuine_at == 0.5 and fit.genuine_method == "clamped"
    assert fit.thresholds.genuine_at <= fit.thresholds.counterfeit_at
    with pytest.raises(ValueError, match="target recall"):
        fit_thresholds([0, 1], [0.1, 0.9], target_recall=0.0)
    with pytest.raises(ValueError, match="probabilities"):
        fit_thresholds([0, 1], [0.1, 1.5])


def test_tied_scores_count_as_one_threshold():
    # three items tie at 0.9 (two counterfeit, one genuine): a threshold at 0.9 calls all three (2/3)
    y = np.array([0, 1, 1, 0])
    p = np.array([0.2, 0.9, 0.9, 0.9])
    fit = fit_thresholds(y, p, 0.99, 0.95)
    assert fit.counterfeit_method == "unreachable"  # 2/3 < 0.95 and no higher threshold exists
    fit = fit_thresholds(y, p, 0.99, 0.6)
    assert fit.thresholds.counterfeit_at == pytest.approx(0.55)  # 2/3 >= 0.6 at 0.9, margin to 0.2


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
