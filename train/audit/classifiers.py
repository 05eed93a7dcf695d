"""Two small binary classifiers for baselines, numpy only: L2-regularised logistic regression and
1-nearest-neighbour, both on features standardised with the training set's mean and sd.

    model = make_classifier("logistic").fit(x_train, y_train)   # x [N, F] float, y [N] in {0, 1}
    p = model.predict_proba(x_test)                              # [M] float64 P(class 1)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

DEFAULT_L2 = 1.0  # penalty 0.5 * l2 * |w|^2 against the summed log-loss (scikit-learn's C = 1 / l2)


class Classifier(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray) -> "Classifier": ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


class _Standardiser:
    """Per-column (x - mean) / sd from the training set; constant columns get sd 1 (they become 0)."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(0)
        sd = x.std(0)
        self.sd = np.where(sd > 1e-12, sd, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) / self.sd


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"expected x [N, F] and y [N], got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("training labels must contain both classes 0 and 1")
    return x, y.astype(np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class LogisticRegression:
    """Binary logistic regression, unpenalised intercept, penalty 0.5 * l2 * |w|^2, fitted by Newton's
    method with step halving.

    The optimal w lies in the row space of the (standardised) training features, so the fit runs in that
    basis (from an SVD): exact, and cheap when features outnumber images (1280-d probe features)."""

    def __init__(self, l2: float = DEFAULT_L2, max_iter: int = 100, tol: float = 1e-9) -> None:
        if l2 <= 0:
            raise ValueError("l2 must be > 0")
        self.l2, self.max_iter, self.tol = l2, max_iter, tol

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LogisticRegression":
        x, y = _check(x, y)
        self.scale = _Standardiser(x)
        z = self.scale(x)
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        basis = vt[: int((s > s[0] * 1e-10).sum())].T if s.size and s[0] > 0 else np.zeros((z.shape[1], 0))
        design = np.hstack([np.ones((len(z), 1)), z @ basis])
        penalty = np.full(design.shape[1], self.l2)
        penalty[0] = 1e-10  # the intercept is free; a trace of curvature keeps the Hessian invertible

        def objective(beta: np.ndarray) -> float:
            eta = design @ beta
            return float((np.logaddexp(0.0, eta) - y * eta).sum() + 0.5 * (penalty * beta * beta).sum())

        beta = np.zeros(design.shape[1])
        value = objective(beta)
        for _ in range(self.max_iter):
            p = _sigmoid(design @ beta)
            grad = design.T @ (p - y) + penalty * beta
            hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
            step = np.linalg.solve(hess, grad)
            t = 1.0
            while True:
                candidate = beta - t * step
                new = objective(candidate)
                if new <= value or t < 1e-8:
                    break
                t *= 0.5
            if new > value:  # no descent left: at the optimum up to rounding
                break
            beta, done, value = candidate, value - new <= self.tol * max(1.0, abs(value)), new
            if done:
                break
        self.intercept = float(beta[0])
        self.coef = basis @ beta[1:]  # [F] weights on standardised features
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """[M, F] -> [M] float64 log-odds of class 1."""
        return self.scale(x) @ self.coef + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """[M, F] -> [M] float64 P(class 1)."""
        return _sigmoid(self.decision_function(x))


class NearestNeighbour:
    """1-nearest-neighbour (Euclidean, standardised features). predict_proba is d0 / (d0 + d1), with dk
    the distance to the nearest training image of class k: above 0.5 exactly when the nearest neighbour
    is of class 1, and graded, so an ROC-AUC can be computed."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> "NearestNeighbour":
        x, y = _check(x, y)
        self.scale = _Standardiser(x)
        z = self.scale(x)
        self.classes = [z[y == 0], z[y == 1]]
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """[M, F] -> [M] float64 score in [0, 1]."""
        z = self.scale(x)
        d = []
        for ref in self.classes:
            sq = (z * z).sum(1)[:, None] - 2 * z @ ref.T + (ref * ref).sum(1)[None, :]
            d.append(np.sqrt(np.maximum(sq.min(1), 0.0)))
        total = d[0] + d[1]
        return np.divide(d[0], total, out=np.full(len(z), 0.5), where=total > 0)


CLASSIFIERS = {"logistic": LogisticRegression, "1nn": NearestNeighbour}


def make_classifier(name: str) -> Classifier:
    """A fresh classifier by name (CLASSIFIERS) with its default settings."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; expected one of {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name]()
