"""3D parallelism, chapter 24: the (TP × DP × PP) rank layout that Megatron-LM uses, and its invariants.

``rank = pp_idx · (dp · tp) + dp_idx · tp + tp_idx``: tensor-parallel groups are consecutive ranks (one
node, NVLink), data-parallel groups share (pp, tp), pipelines share (dp, tp).
"""
from __future__ import annotations

from labkit.parallel.runtime import _check_int

__all__ = ["rank_layout_3d", "check_rank_layout"]


def rank_layout_3d(world_size: int, tp: int, pp: int, dp: int) -> dict[str, list[list[int]]]:
    """Megatron-LM's rank layout: TP fastest-varying, then DP, then PP.

    ``rank = pp_idx · (dp · tp) + dp_idx · tp + tp_idx``. TP groups are ``tp`` consecutive ranks (inside
    one node, on NVLink); each DP group holds the ranks with the same (pp, tp) index; each PP group
    (one pipeline) the ranks with the same (dp, tp) index, stride ``dp · tp``.
    Returns ``{"tp": [...], "dp": [...], "pp": [...]}``, each a list of rank lists.
    """
    for name, v in (("world_size", world_size), ("tp", tp), ("pp", pp), ("dp", dp)):
        _check_int(v, name, 1, "sizes are positive ints")
    if tp * pp * dp != world_size:
        raise ValueError(f"tp × pp × dp must equal world_size: {tp} × {pp} × {dp} = {tp * pp * dp} != {world_size}; "
                         "choose sizes whose product is the number of ranks")

    def rank(p: int, d: int, t: int) -> int:
        return p * dp * tp + d * tp + t

    return {
        "tp": [[rank(p, d, t) for t in range(tp)] for p in range(pp) for d in range(dp)],
        "dp": [[rank(p, d, t) for d in range(dp)] for p in range(pp) for t in range(tp)],
        "pp": [[rank(p, d, t) for p in range(pp)] for d in range(dp) for t in range(tp)],
    }


def check_rank_layout(layout: dict[str, list[list[int]]], world_size: int, gpus_per_node: int = 8) -> dict[str, bool]:
    """Invariants of a 3D layout: every kind of group partitions ``range(world_size)``; each TP group
    lies inside one node; a rank's TP, DP and PP groups meet only in that rank.

    ``layout`` is what :func:`rank_layout_3d` returns: ``{"tp": [...], "dp": [...], "pp": [...]}``, each a list of
    rank lists; a missing kind or a non-int rank is a ValueError/TypeError (a check must not crash).
    """
    _check_int(world_size, "world_size", 1, "the number of ranks")
    _check_int(gpus_per_node, "gpus_per_node", 1, "GPUs per node, e.g. 8")
    if not isinstance(layout, dict) or set(layout) != {"tp", "dp", "pp"}:
        got = sorted(layout) if isinstance(layout, dict) else type(layout).__name__
        raise ValueError(f"`layout` must have exactly the keys 'tp', 'dp', 'pp' (as rank_layout_3d returns), got {got}")
    for kind, groups in layout.items():
        if not isinstance(groups, list) or not all(isinstance(g, (list, tuple)) and g and all(
                isinstance(r, int) and not isinstance(r, bool) for r in g) for g in groups):
            raise TypeError(f"`layout[{kind!r}]` must be a list of non-empty lists of int ranks")
    ranks = set(range(world_size))
    out = {}
    for kind, groups in layout.items():
        flat = [r for g in groups for r in g]
        out[f"{kind} groups partition the ranks"] = sorted(flat) == sorted(ranks) and len(flat) == world_size
    out["each tp group inside one node"] = all(len({r // gpus_per_node for r in g}) == 1 for g in layout["tp"])
    member = {kind: {r: set(g) for g in groups for r in g} for kind, groups in layout.items()}
    out["tp ∩ dp ∩ pp groups of a rank = {rank}"] = all(
        all(r in member[kind] for kind in member)
        and member["tp"][r] & member["dp"][r] == {r} and member["tp"][r] & member["pp"][r] == {r}
        and member["dp"][r] & member["pp"][r] == {r} for r in ranks)
    return out
