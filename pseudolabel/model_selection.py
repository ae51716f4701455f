"""Which model would a user pick without the test split, and does the test split agree?

With a few labels the validation split is tiny (20-70 images) and can rank models the wrong way
round. Every comparison therefore says (1) which model validation picks: the baseline (the
teacher) is kept unless another model's val ROC AUC beats it by at least `margin`, then the best
by val wins; (2) how val and test rank the models (Kendall's tau, and whether val's pick is test's
best). Over seeds (`seeds.aggregate`) the test AUC of the val-picked model is what a user of this
procedure gets, stated beside the teacher's.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MARGIN = 0.02


def choose_by_validation(rows: list[dict], margin: float = DEFAULT_MARGIN) -> dict:
    """`rows`: a comparison's rows (run, baseline, val_roc_auc, roc_auc), the baseline first.
    Returns the selection: chosen run, why, its test AUC, the test-best run, rank agreement."""
    scored = [r for r in rows if r.get("val_roc_auc") is not None]
    base = rows[0]
    if base.get("val_roc_auc") is None or len(scored) < 2:
        return {"chosen": None, "why": "no validation scores to choose by", "margin": margin}
    best = max(scored, key=lambda r: r["val_roc_auc"])
    if best is base or best["val_roc_auc"] < base["val_roc_auc"] + margin:
        chosen = base
        why = (f"no model beats {base['run']} on val by >= {margin:g}" if best is not base
               else f"{base['run']} has the best val ROC AUC")
    else:
        chosen = best
        why = f"best val ROC AUC, {best['val_roc_auc'] - base['val_roc_auc']:+.3f} over {base['run']} (margin {margin:g})"
    test_best = max(scored, key=lambda r: r["roc_auc"])
    return {
        "chosen": chosen["run"], "why": why, "margin": margin,
        "chosen_test_roc_auc": chosen["roc_auc"], "chosen_val_roc_auc": chosen["val_roc_auc"],
        "test_best": test_best["run"], "picked_test_best": chosen is test_best,
        "kendall_tau": rank_agreement([r["val_roc_auc"] for r in scored], [r["roc_auc"] for r in scored]),
        "ranks": [{"run": r["run"], "val_roc_auc": r["val_roc_auc"], "roc_auc": r["roc_auc"],
                   "val_rank": int(v), "test_rank": int(t)}
                  for r, v, t in zip(scored, _ranks([r["val_roc_auc"] for r in scored]),
                                     _ranks([r["roc_auc"] for r in scored]))],
    }


def rank_agreement(val: list[float], test: list[float]) -> float | None:
    """Kendall's tau between the val and test AUCs of the same models (1: the same order)."""
    from scipy.stats import kendalltau

    if len(val) < 2:
        return None
    tau = kendalltau(val, test).statistic
    return None if np.isnan(tau) else float(tau)


def _ranks(values: list[float]) -> list[int]:
    """1 = the highest AUC (ties share the better rank)."""
    from scipy.stats import rankdata

    return list(rankdata(-np.asarray(values, float), method="min").astype(int))


def selection_sentence(selection: dict) -> str:
    if selection.get("chosen") is None:
        return selection["why"] + "."
    tau = selection["kendall_tau"]
    return (f"Validation picks {selection['chosen']} ({selection['why']}); its test ROC AUC is "
            f"{selection['chosen_test_roc_auc']:.3f}. The best on test is {selection['test_best']}"
            f"{' (the same)' if selection['picked_test_best'] else ''}. Kendall's tau between the val and "
            f"test orders: {'n/a' if tau is None else f'{tau:+.2f}'} (1: the same order).")


def selection_markdown(selection: dict) -> list[str]:
    """The comparison report's "Model selection" section."""
    lines = ["## Model selection by validation", "", selection_sentence(selection), ""]
    if selection.get("chosen") is None:
        return lines
    lines += ["| run | val ROC AUC | val rank | test ROC AUC | test rank |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['run']} | {r['val_roc_auc']:.3f} | {r['val_rank']} | {r['roc_auc']:.3f} | {r['test_rank']} |"
              for r in selection["ranks"]]
    return lines + [""]


def aggregate_selection(selections: dict[int, dict], teacher_test: dict[int, float]) -> dict | None:
    """Over seeds: how often val picked each run and the test's best, the mean tau, and the test
    AUC of the val-picked model against the teacher's on the same seed."""
    from pseudolabel.seeds import mean_interval

    done = {s: sel for s, sel in selections.items() if sel and sel.get("chosen") is not None}
    if not done:
        return None
    chosen_auc = [done[s]["chosen_test_roc_auc"] for s in done]
    deltas = [done[s]["chosen_test_roc_auc"] - teacher_test[s] for s in done]
    mean, low, high = mean_interval(deltas)
    taus = [sel["kendall_tau"] for sel in done.values() if sel["kendall_tau"] is not None]
    picks: dict[str, int] = {}
    for sel in done.values():
        picks[sel["chosen"]] = picks.get(sel["chosen"], 0) + 1
    return {"seeds": list(done), "margin": next(iter(done.values()))["margin"], "picks": picks,
            "picked_test_best": int(sum(sel["picked_test_best"] for sel in done.values())),
            "kendall_tau_mean": float(np.mean(taus)) if taus else None,
            "chosen_test_roc_auc": chosen_auc, "chosen_test_roc_auc_mean": float(np.mean(chosen_auc)),
            "chosen_test_roc_auc_sd": float(np.std(chosen_auc, ddof=1)) if len(chosen_auc) > 1 else 0.0,
            "delta_teacher": deltas, "delta_teacher_mean": mean, "delta_teacher_ci": [low, high]}
