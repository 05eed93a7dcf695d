"""Classification metrics in numpy: accuracy, precision, recall, F1, ROC-AUC, confusion matrix.

Binary problems report the positive class (index 1, "counterfeit"); more classes report macro averages.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """[C,C] int64 counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return cm


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Binary ROC-AUC by the rank statistic (ties count half); None when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def classification_report(labels: np.ndarray, probs: np.ndarray, positive: int = 1) -> dict:
    """labels [N] int, probs [N,C] float (softmax). Returns accuracy, precision, recall, f1, roc_auc,
    confusion_matrix (list of lists) and n."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    c = probs.shape[1]
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, c)
    tp = np.diag(cm).astype(np.float64)
    prec_c = np.divide(tp, cm.sum(0), out=np.zeros(c), where=cm.sum(0) > 0)
    rec_c = np.divide(tp, cm.sum(1), out=np.zeros(c), where=cm.sum(1) > 0)
    f1_c = np.divide(2 * prec_c * rec_c, prec_c + rec_c, out=np.zeros(c), where=(prec_c + rec_c) > 0)
    if c == 2:
        precision, recall, f1 = prec_c[positive], rec_c[positive], f1_c[positive]
        auc = roc_auc(labels == positive, probs[:, positive])
    else:
        precision, recall, f1 = prec_c.mean(), rec_c.mean(), f1_c.mean()
        aucs = [roc_auc(labels == k, probs[:, k]) for k in range(c)]
        aucs = [a for a in aucs if a is not None]
        auc = float(np.mean(aucs)) if aucs else None
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": auc,
        "confusion_matrix": cm.tolist(),
    }
