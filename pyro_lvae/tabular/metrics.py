"""How close a synthetic table is to a real one (needs the ``tabular`` extra: pandas and
scikit-learn).

- :func:`shape_similarity`: per column, ``1 - KS statistic`` (continuous) or
  ``1 - total variation distance`` of the frequencies (binary, categorical); 1 is identical;
- :func:`association_difference`: the mean absolute difference between the real and synthetic
  association of every pair of columns (Pearson correlation between continuous columns,
  Cramer's V between categorical ones, the correlation ratio between a categorical and a
  continuous one); 0 is identical;
- :func:`detection_auc`: the cross-validated ROC AUC of a logistic regression telling real rows
  from synthetic ones; 0.5 means it cannot;
- :func:`utility`: train-synthetic-test-real: a gradient-boosting model fitted on the synthetic
  table and scored on held-out real rows for a target column (accuracy, or R^2), beside the
  same model fitted on the real training rows.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .encoding import TableTransformer

__all__ = ["shape_similarity", "association_difference", "detection_auc", "utility",
           "all_metrics"]


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ConfigError("table metrics need scikit-learn: pip install 'pyro-lvae[tabular]'"
                          ) from None


def _frequencies(a, b) -> tuple[np.ndarray, np.ndarray]:
    labels = sorted(set(map(str, a)) | set(map(str, b)))
    fa = np.array([np.mean(a.astype(str) == v) for v in labels])
    fb = np.array([np.mean(b.astype(str) == v) for v in labels])
    return fa, fb


def shape_similarity(real, synth, transformer: TableTransformer) -> dict[str, float]:
    """Per-column similarity of the marginal distributions (1 is identical)."""
    from scipy.stats import ks_2samp

    out = {}
    for col in transformer.columns:
        a, b = real[col.name].to_numpy(), synth[col.name].to_numpy()
        if col.kind in ("continuous", "integer"):
            out[col.name] = 1.0 - float(ks_2samp(a.astype(float), b.astype(float)).statistic)
        else:
            fa, fb = _frequencies(a, b)
            out[col.name] = 1.0 - 0.5 * float(np.abs(fa - fb).sum())
    return out


def _cramers_v(a, b) -> float:
    pd = __import__("pandas")
    table = pd.crosstab(a.astype(str), b.astype(str)).to_numpy().astype(float)
    n = table.sum()
    if n == 0 or min(table.shape) < 2:
        return 0.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / np.where(expected > 0, expected, 1)).sum())
    return math.sqrt(chi2 / (n * (min(table.shape) - 1)))


def _correlation_ratio(categories, values) -> float:
    values = values.astype(float)
    total = ((values - values.mean()) ** 2).sum()
    if total == 0:
        return 0.0
    between = sum(((values[categories == c].mean() - values.mean()) ** 2) *
                  (categories == c).sum() for c in np.unique(categories))
    return math.sqrt(between / total)


def _association(df, transformer: TableTransformer, a, b) -> float:
    ca, cb = transformer.columns[a], transformer.columns[b]
    x, y = df[ca.name].to_numpy(), df[cb.name].to_numpy()
    numeric = ("continuous", "integer")
    if ca.kind in numeric and cb.kind in numeric:
        if x.astype(float).std() == 0 or y.astype(float).std() == 0:
            return 0.0
        return float(np.corrcoef(x.astype(float), y.astype(float))[0, 1])
    if ca.kind not in numeric and cb.kind not in numeric:
        return _cramers_v(x, y)
    cats, vals = (x, y) if ca.kind not in numeric else (y, x)
    return _correlation_ratio(cats.astype(str), vals)


def association_difference(real, synth, transformer: TableTransformer) -> float:
    """Mean absolute difference of pairwise associations (0 is identical)."""
    pairs = list(combinations(range(len(transformer.columns)), 2))
    if not pairs:
        return 0.0
    diffs = [abs(_association(real, transformer, a, b) - _association(synth, transformer, a, b))
             for a, b in pairs]
    return float(np.mean(diffs))


def _features(df, transformer: TableTransformer) -> np.ndarray:
    x = transformer.transform(df).numpy()
    parts = []
    for j, col in enumerate(transformer.columns):
        if col.kind == "categorical":
            parts.append(np.eye(max(len(col.categories), 1))[x[:, j].astype(int)])
        else:
            parts.append(x[:, [j]])
    return np.concatenate(parts, axis=1)


def detection_auc(real, synth, transformer: TableTransformer, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a classifier telling real from synthetic rows (0.5 ideal)."""
    _sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n = min(len(real), len(synth))
    rng = np.random.default_rng(seed)
    real = real.iloc[rng.permutation(len(real))[:n]]
    synth = synth.iloc[rng.permutation(len(synth))[:n]]
    x = np.concatenate([_features(real, transformer), _features(synth, transformer)])
    y = np.r_[np.zeros(n), np.ones(n)]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    clf = LogisticRegression(max_iter=2000)
    return float(np.mean(cross_val_score(clf, x, y, cv=folds, scoring="roc_auc")))


def utility(real_train, real_test, synth, transformer: TableTransformer, target: str,
            seed: int = 0) -> dict[str, float]:
    """Train on synthetic, test on real: the score of a gradient-boosting model for ``target``
    trained on ``synth`` and on ``real_train``, both tested on ``real_test``."""
    _sklearn()
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, r2_score

    names = transformer.names
    if target not in names:
        raise DataError(f"no target column {target!r}; columns are {', '.join(names)}")
    j = names.index(target)
    col = transformer.columns[j]
    classify = col.kind in ("binary", "categorical")
    keep = [i for i in range(len(names)) if i != j]

    def xy(df):
        f = transformer.transform(df).numpy()
        return f[:, keep], f[:, j]

    xt, yt = xy(real_test)
    out = {}
    for name, df in (("synthetic", synth), ("real", real_train)):
        x, y = xy(df)
        if classify and len(np.unique(y)) < 2:
            out[name] = float("nan")  # a single class: no classifier to train
            continue
        model = (HistGradientBoostingClassifier(random_state=seed) if classify
                 else HistGradientBoostingRegressor(random_state=seed))
        model.fit(x, y)
        pred = model.predict(xt)
        out[name] = float(accuracy_score(yt, pred) if classify else r2_score(yt, pred))
    out["metric"] = "accuracy" if classify else "R^2"
    return out


def all_metrics(real_train, real_test, synth, transformer: TableTransformer,
                target: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Every metric of this module for synthetic rows ``synth`` against the held-out rows
    (``utility`` only when a ``target`` column is named)."""
    shapes = shape_similarity(real_test, synth, transformer)
    out: dict[str, Any] = {
        "shape_similarity": float(np.mean(list(shapes.values()))),
        "association_difference": association_difference(real_test, synth, transformer),
        "detection_auc": detection_auc(real_test, synth, transformer, seed),
        "per_column": shapes,
    }
    if target is not None:
        u = utility(real_train, real_test, synth, transformer, target, seed)
        out.update(utility_synthetic=u["synthetic"], utility_real=u["real"],
                   utility_metric=u["metric"])
    return out
