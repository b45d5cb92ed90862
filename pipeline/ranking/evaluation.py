"""Honest quality numbers for a ranking: ROC AUC and precision of the top 10%, on held-out marks.

``cross_validate`` fits the preference model on k-1 folds and scores the held-out fold, so
every draft is ranked by a model that never saw its label. The same drafts are also ranked by
the default scorer alone and by random order (whose expectation is exact: AUC 0.5, precision =
the seed rate). A ranking "beats random" only when its AUC's 95% lower bound (Hanley & McNeil
standard error) is above 0.5 *and* a permutation test agrees: the whole cross-validation rerun
on shuffled labels (``PERMUTATIONS`` times) gives a lower AUC in at least 95% of the shuffles.
Pooled out-of-fold scores vary more than the analytic error assumes (each fold has its own
model), so the analytic bound alone claimed "better than random" on pure noise 3 times in 20.
With few marks, a lucky 0.6 is not a claim.
"""

from __future__ import annotations

import math

PERMUTATIONS = 99  # p = (shuffles reaching the real AUC + 1) / 100; a claim needs p <= 0.05


def auc(scores, labels) -> float:
    """ROC AUC = P(score of a random positive > a random negative), ties counted half."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    s = np.where(np.isnan(s), -np.inf, s)  # rejected drafts rank last
    pos, neg = int((y > 0).sum()), int((y <= 0).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    return float((ranks[y > 0].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _average_ranks(s):
    import numpy as np

    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1  # 1-based average rank of the tie
        i = j + 1
    return ranks


def precision_at(scores, labels, fraction: float = 0.1) -> float:
    """Share of seeds among the top ``fraction`` of drafts (at least one draft)."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    s = np.where(np.isnan(s), -np.inf, s)
    k = max(1, int(round(len(s) * fraction)))
    top = np.argsort(-s, kind="mergesort")[:k]
    return float((y[top] > 0).mean())


def auc_lower_bound(a: float, pos: int, neg: int) -> float:
    """AUC - 1.96 standard errors (Hanley & McNeil 1982)."""
    if math.isnan(a) or pos == 0 or neg == 0:
        return math.nan
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (pos - 1) * (q1 - a * a) + (neg - 1) * (q2 - a * a)) / (pos * neg)
    return a - 1.96 * math.sqrt(max(var, 0.0))


def folds(labels, k: int, seed: int = 0) -> list:
    """Stratified fold index per sample: positives and negatives spread evenly."""
    import numpy as np

    y = np.asarray(labels)
    fold = np.empty(len(y), dtype=int)
    rng = np.random.default_rng(seed)
    for cls in (0, 1):
        idx = np.flatnonzero((y > 0) == bool(cls))
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def cross_validate(X, y, names: list[str], k: int = 5):
    """Out-of-fold log-odds for every sample."""
    import numpy as np

    from pipeline.ranking.preference import fit

    k = max(2, min(k, int((y > 0).sum()), int((y <= 0).sum())))
    fold = folds(y, k)
    out = np.empty(len(y))
    for f in range(k):
        test = fold == f
        out[test] = fit(X[~test], y[~test], names).logit(X[test])
    return out


def ranking_quality(scores, labels) -> dict:
    import numpy as np

    y = np.asarray(labels)
    pos, neg = int((y > 0).sum()), int((y <= 0).sum())
    a = auc(scores, y)
    lower = auc_lower_bound(a, pos, neg)
    return {
        "auc": round(a, 4),
        "auc_low95": round(lower, 4),
        "precision_top10": round(precision_at(scores, y), 4),
        "beats_random": bool(lower > 0.5),
    }


def permutation_p(X, y, names: list[str], observed: float, seed: int = 0) -> float:
    """Share of label shuffles whose cross-validated AUC reaches ``observed`` (with the real one)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(PERMUTATIONS):
        shuffled = rng.permutation(y)
        hits += auc(cross_validate(X, shuffled, names), shuffled) >= observed
    return (hits + 1) / (PERMUTATIONS + 1)


def evaluate(X, y, names: list[str], default_scores) -> dict:
    """Held-out quality of the preference model, of the default scorer alone, and of random order."""
    held_out = cross_validate(X, y, names)
    learned = ranking_quality(held_out, y)
    if learned["beats_random"]:
        learned["permutation_p"] = round(permutation_p(X, y, names, learned["auc"]), 4)
        learned["beats_random"] = learned["permutation_p"] <= 0.05
    return {
        "drafts": int(len(y)),
        "seeds": int((y > 0).sum()),
        "preference": learned,
        "default": ranking_quality(default_scores, y),
        "random": {"auc": 0.5, "precision_top10": round(float((y > 0).mean()), 4), "beats_random": False},
    }


def format_report(ev: dict) -> str:
    lines = [
        f"held-out evaluation on {ev['drafts']} labelled drafts ({ev['seeds']} seeds), 5-fold:",
        f"  {'ranking':<12} {'ROC AUC':>8} {'(95% low)':>10} {'top-10% precision':>18}",
    ]
    for name in ("preference", "default", "random"):
        q = ev[name]
        low = f"{q['auc_low95']:.3f}" if "auc_low95" in q else "-"
        lines.append(f"  {name:<12} {q['auc']:>8.3f} {low:>10} {q['precision_top10']:>18.3f}")
    p = ev["preference"]
    verdict = (
        f"beats random order (permutation p = {p['permutation_p']:.2f})"
        if p["beats_random"]
        else "NOT distinguishable from random order with these marks (keep marking drafts)"
    )
    lines.append(f"the preference model {verdict}")
    return "\n".join(lines)
