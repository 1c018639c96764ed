"""Synthetic tasks, their toy models and the one shared trainer (`toy_tasks.trainer`).

A toy checkpoint is self-describing: beside its weights it saves its task's spec (`{"name", ..., "seed"}`),
and `rebuild_task` turns that spec back into the task, so a page or a script can sample the data a
checkpoint was trained on from the checkpoint alone.
"""

from __future__ import annotations


def rebuild_task(spec: dict | None):
    """The task a checkpoint names in its saved spec (None when it names none, or one unknown here)."""
    if not spec:
        return None
    if spec.get("name") == "bigram_backcopy":
        from toy_tasks import bigram_backcopy

        return bigram_backcopy.from_spec(spec)
    if spec.get("name") == "icl_classification":
        from toy_tasks import icl_classification

        return icl_classification.from_spec(spec)
    return None
