"""The retention policy, written once for every backend: they only list, stat and delete.

Artifacts are kept for a while so that a client can fetch a reply's audio or image after the
turn; the store must not grow without bound. Two limits apply, in this order:

1. Age: an artifact older than ``max_age_seconds`` is removed, referenced or not (nothing is
   promised beyond the retention period).
2. Total size: while the rest adds up to more than ``max_total_bytes``, the oldest artifact that
   nobody references (a live conversation, a pending download) is removed. A referenced artifact
   younger than ``max_age_seconds`` is never removed, even if that leaves the total over the
   budget: losing a reply a client is about to fetch is worse than a full disk for a while.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from services.common.artifacts.model import Artifact, ArtifactStore

__all__ = ["plan_sweep", "sweep"]


def plan_sweep(
    artifacts: Iterable[Artifact],
    *,
    now: float,
    max_age_seconds: float,
    max_total_bytes: int,
    referenced: Collection[str],
) -> list[Artifact]:
    """The artifacts the policy removes, expired ones first, then the oldest unreferenced."""
    keep_ids = frozenset(referenced)
    cutoff = now - max_age_seconds
    ordered = sorted(artifacts, key=lambda a: (a.created, a.id))
    doomed = [a for a in ordered if a.created < cutoff]
    young = [a for a in ordered if a.created >= cutoff]
    total = sum(a.size for a in young)
    for artifact in young:
        if total <= max_total_bytes:
            break
        if artifact.id not in keep_ids:
            doomed.append(artifact)
            total -= artifact.size
    return doomed


def sweep(
    store: ArtifactStore,
    *,
    now: float,
    max_age_seconds: float,
    max_total_bytes: int,
    referenced: Collection[str],
) -> list[str]:
    """Apply ``plan_sweep`` to everything in ``store``; the ids actually removed (one removed
    meanwhile by another replica's sweep is not counted twice)."""
    plan = plan_sweep(
        store.scan(),
        now=now,
        max_age_seconds=max_age_seconds,
        max_total_bytes=max_total_bytes,
        referenced=referenced,
    )
    return [a.id for a in plan if store.delete(a.id, a.meta.tenant)]
