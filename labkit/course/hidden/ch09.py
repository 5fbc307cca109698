"""Hidden tests of chapter 09's lab tasks: the block allocator's step with copy-on-write, attention through a
block table, and speculative decoding's accept/reject step.

References: for ``append_slot``, a contiguous list of each sequence's tokens (random appends, forks and frees on
a shared block store: every sequence must read back exactly its own tokens through its table) and labkit's
allocator for the exact table / ref-count / free-list state; for ``paged_attention``, PyTorch's
``scaled_dot_product_attention`` over the *contiguous* keys and values, which the check scatters into scrambled
blocks; for ``speculative_accept``, the target distribution itself (chi-square goodness of fit of the emitted
tokens at level 1e-4, acceptance rate within 5 standard errors of Σ min(p, q)) and exact one-hot cases.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, LearnerError, Task
from labkit.serving.allocator import OutOfBlocks
from labkit.serving.allocator import append_slot as ref_append_slot

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _expect_error(call, kind: type, what: str) -> None:
    """``call()`` must raise ``kind`` (the learner proxy wraps it in LearnerError)."""
    try:
        call()
    except LearnerError as e:
        cause = e.__cause__
        assert isinstance(cause, kind), f"{what}: raised {type(cause).__name__}, expected {kind.__name__}"
    else:
        raise AssertionError(f"{what}: nothing was raised, expected {kind.__name__}")


# ---- 09.A append_slot ----------------------------------------------------------------------------------
def _random_ops(L: Learner, g: torch.Generator, n_ops: int) -> None:
    """Appends / forks / frees on a shared store, mirrored by labkit's allocator; tokens read back per sequence."""
    bs, nb = _n(g, 1, 7), _n(g, 24, 40)
    store = torch.full((nb * bs,), -1, dtype=torch.long)              # one "KV" value per slot: the token
    mine = {"tables": {}, "refs": [0] * nb, "free": list(range(nb))}
    ref = {"tables": {}, "refs": [0] * nb, "free": list(range(nb))}
    truth: dict[int, list[int]] = {}
    next_id = 0
    for op_i in range(n_ops):
        r = float(torch.rand(1, generator=g))
        seqs = sorted(truth)
        if not seqs or r < 0.08:                                       # a new sequence
            for st in (mine, ref):
                st["tables"][next_id] = []
            truth[next_id], next_id = [], next_id + 1
            continue
        s = seqs[_n(g, 0, len(seqs) - 1)]
        if r < 0.16:                                                   # fork s (prefix sharing)
            for st in (mine, ref):
                st["tables"][next_id] = list(st["tables"][s])
                for b in st["tables"][s]:
                    st["refs"][b] += 1
            truth[next_id], next_id = list(truth[s]), next_id + 1
            continue
        if r < 0.22 and len(seqs) > 1:                                 # free s
            for st in (mine, ref):
                for b in st["tables"].pop(s):
                    st["refs"][b] -= 1
                    if st["refs"][b] == 0:
                        st["free"].append(b)
            del truth[s]
            continue
        length, token = len(truth[s]), op_i
        try:
            want = ref_append_slot(ref["tables"][s], length, bs, ref["refs"], ref["free"])
        except OutOfBlocks:
            before = (list(mine["tables"][s]), list(mine["refs"]), list(mine["free"]))
            _expect_error(lambda: L.append_slot(mine["tables"][s], length, bs, mine["refs"], mine["free"]),
                          RuntimeError, f"no free block left (block_size {bs}, position {length})")
            exact((mine["tables"][s], mine["refs"], mine["free"]), before, quiet=True,
                  name="after the RuntimeError the table, ref counts and free list are unchanged")
            continue
        got = L.append_slot(mine["tables"][s], length, bs, mine["refs"], mine["free"])
        where = f"block_size {bs}, {nb} blocks, sequence {s} writing position {length} (operation {op_i})"
        exact(tuple(got), tuple(want), quiet=True, name=f"(slot, copied_from), {where}")
        exact((mine["tables"][s], mine["refs"], mine["free"]), (ref["tables"][s], ref["refs"], ref["free"]),
              quiet=True, name=f"block table, ref counts, free list after the call, {where}")
        slot, src = got
        if src is not None:                                            # copy-on-write: copy the old block's tokens
            dst = slot // bs
            store[dst * bs:(dst + 1) * bs] = store[src * bs:(src + 1) * bs]
        store[slot] = token
        truth[s].append(token)
    for s, toks in truth.items():
        pos = torch.arange(len(toks))
        table = torch.tensor(mine["tables"][s] or [0], dtype=torch.long)
        got = store[table[pos // bs] * bs + pos % bs].tolist()
        exact(got, toks, quiet=True, name=f"sequence {s} reads back its own tokens through its block table "
                                          f"(block_size {bs}; forks share blocks until they write)")


def _slot_random_ops(L: Learner, g: torch.Generator) -> None:
    for _ in range(3):
        _random_ops(L, g, 160)


def _slot_cow_worked(L: Learner, g: torch.Generator) -> None:
    bs = _n(g, 2, 6)
    table, refs, free = [0, 1], [2, 2, 0, 0, 0], [4, 2, 3]
    other = [0, 1]
    pos = bs + _n(g, 0, bs - 1)                                        # inside the shared block 1
    got = L.append_slot(table, pos, bs, refs, free)
    exact(tuple(got), (4 * bs + pos % bs, 1), quiet=True,
          name=f"writing position {pos} into shared block 1 (count 2): (slot in the first free block 4, copied from 1)")
    exact((table, refs, free, other), ([0, 4], [2, 1, 0, 0, 1], [2, 3], [0, 1]), quiet=True,
          name="copy-on-write: the fresh block replaces 1 in this table only, block 1 loses a reference")
    got = L.append_slot(table, 2 * bs, bs, refs, free)
    exact(tuple(got), (2 * bs, None), quiet=True, name=f"position {2 * bs} starts a new block: the first free (2)")
    exact((table, refs, free), ([0, 4, 2], [2, 1, 1, 0, 1], [3]), quiet=True, name="new block appended, count 1")


def _slot_errors(L: Learner, g: torch.Generator) -> None:
    bs = _n(g, 2, 5)
    table, refs, free = [0], [1, 0], []
    _expect_error(lambda: L.append_slot(table, bs, bs, refs, free), RuntimeError,
                  "a new block is needed and the free list is empty")
    exact((table, refs, free), ([0], [1, 0], []), quiet=True, name="nothing changed after running out of blocks")
    _expect_error(lambda: L.append_slot([0], 1, 0, [1], [1]), ValueError, "block_size 0")
    _expect_error(lambda: L.append_slot([0], 2 * bs + 1, bs, [1, 0, 0], [1, 2]), ValueError,
                  "a position beyond the block table (positions must be reserved in order)")


# ---- 09.B paged_attention ------------------------------------------------------------------------------
def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (H, Tq, hd), the last Tq positions, over contiguous k, v (n_kv, C, hd)."""
    H, Tq, _ = q.shape
    n_kv, C, _ = k.shape
    allowed = torch.arange(C)[None, :] <= torch.arange(C - Tq, C)[:, None]
    rep = H // n_kv
    return F.scaled_dot_product_attention(q[None], k.repeat_interleave(rep, 0)[None],
                                          v.repeat_interleave(rep, 0)[None], attn_mask=allowed)[0]


def _paged_case(L: Learner, g: torch.Generator, C: int, Tq: int, bs: int, n_kv: int, rep: int, hd: int,
                garbage: float = 1.0) -> None:
    H, nblk = n_kv * rep, math.ceil(C / bs)
    num_blocks = nblk + _n(g, 1, 6)
    k = torch.randn(n_kv, C, hd, generator=g)
    v = torch.randn(n_kv, C, hd, generator=g)
    q = torch.randn(H, Tq, hd, generator=g)
    k_cache = garbage * torch.randn(num_blocks, bs, n_kv, hd, generator=g)   # unused slots hold other data
    v_cache = garbage * torch.randn(num_blocks, bs, n_kv, hd, generator=g)
    table = torch.randperm(num_blocks, generator=g)[:nblk]
    pos = torch.arange(C)
    k_cache[table[pos // bs], pos % bs] = k.transpose(0, 1)
    v_cache[table[pos // bs], pos % bs] = v.transpose(0, 1)
    out = L.paged_attention(q, k_cache, v_cache, table.tolist(), C)
    close(out, _reference(q, k, v), atol=1e-5, quiet=True,
          name=f"C = {C}, Tq = {Tq}, block_size {bs}, {H} heads / {n_kv} KV heads, head_dim {hd}, table "
               f"{table.tolist()}: == attention over the contiguous keys (torch SDPA)")


def _paged_random(L: Learner, g: torch.Generator) -> None:
    for _ in range(4):
        bs = _n(g, 2, 7)
        C = bs * _n(g, 1, 5) + _n(g, 1, bs - 1)                       # block_size does not divide C
        _paged_case(L, g, C, _n(g, 1, min(C, 6)), bs, _n(g, 1, 3), _n(g, 1, 3), _n(g, 2, 9))


def _paged_prefill_decode(L: Learner, g: torch.Generator) -> None:
    bs = _n(g, 3, 6)
    C = 3 * bs + 1
    _paged_case(L, g, C, C, bs, 2, 2, 8)                               # a whole prompt at once
    _paged_case(L, g, C, 1, bs, 2, 2, 8)                               # one decode step
    _paged_case(L, g, 1, 1, bs, 1, 4, 4)                               # the very first token


def _paged_ignores_the_rest(L: Learner, g: torch.Generator) -> None:
    bs = _n(g, 4, 8)
    _paged_case(L, g, 2 * bs + 1, 2, bs, 2, 2, 6, garbage=1e4)         # huge values past context_len


# ---- 09.C speculative_accept ---------------------------------------------------------------------------
def _pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    exp = probs.double() * counts.sum()
    obs = counts.double()
    big = exp >= 5
    o, e = obs[big], exp[big]
    if not bool(big.all()):
        o, e = torch.cat([o, obs[~big].sum()[None]]), torch.cat([e, exp[~big].sum()[None]])
    return float(chisquare(o.numpy(), (e * o.sum() / e.sum()).numpy()).pvalue)


def _accept_distribution(L: Learner, g: torch.Generator) -> None:
    for V, k in ((_n(g, 4, 7), 1), (_n(g, 4, 7), 2)):
        p = (2.5 * torch.randn(k + 1, V, generator=g)).softmax(-1)
        q = (2.5 * torch.randn(k, V, generator=g)).softmax(-1)
        lg = torch.Generator().manual_seed(_n(g, 0, 10**6))
        n, first, accepted = 3000, torch.zeros(V), 0
        for _ in range(n):
            x = torch.stack([torch.multinomial(q[i], 1, generator=lg)[0] for i in range(k)])
            out = list(L.speculative_accept(p, q, x, lg))
            assert 1 <= len(out) <= k + 1, f"a round emits 1 .. k + 1 = {k + 1} tokens, yours emitted {len(out)}"
            first[int(out[0])] += 1
            accepted += int(out[0]) == int(x[0]) and len(out) >= 2
        pv = _pvalue(first, p[0])
        assert pv > 1e-4, (f"V = {V}, k = {k}: the first emitted token does not follow the target's p_1 "
                           f"(chi-square p-value {pv:.2e} over {n} rounds; counts {first.int().tolist()}, expected "
                           f"{[round(float(t) * n) for t in p[0]]}); after a rejection sample max(0, p - q) / sum")
        overlap = float(torch.minimum(p[0], q[0]).sum())
        se = math.sqrt(overlap * (1 - overlap) / n)
        assert abs(accepted / n - overlap) < 5 * se + 1e-9, (
            f"V = {V}, k = {k}: the first proposal was accepted in {accepted / n:.4f} of the rounds; the rule "
            f"min(1, p/q) accepts with probability sum min(p, q) = {overlap:.4f}")


def _accept_exact(L: Learner, g: torch.Generator) -> None:
    V, k = _n(g, 5, 12), _n(g, 2, 5)
    p = torch.randn(k + 1, V, generator=g).softmax(-1)
    x = torch.stack([torch.multinomial(p[i], 1, generator=g)[0] for i in range(k)])
    out = [int(t) for t in L.speculative_accept(p, p[:k].clone(), x, torch.Generator().manual_seed(1))]
    assert len(out) == k + 1 and out[:k] == x.tolist(), (
        f"p == q: every proposal is accepted and a bonus token follows (k + 1 = {k + 1} tokens), got {out}")
    t_arg = torch.randint(0, V, (k + 1,), generator=g)
    d_arg = t_arg[:k].clone()
    j = _n(g, 0, k - 1)
    d_arg[j] = (d_arg[j] + 1) % V
    one = lambda a: F.one_hot(a, V).float()  # noqa: E731
    out = [int(t) for t in L.speculative_accept(one(t_arg), one(d_arg), d_arg, torch.Generator().manual_seed(2))]
    exact(out, t_arg[:j + 1].tolist(), quiet=True,
          name=f"one-hot (greedy) p and q, the draft wrong at position {j}: accept {j} tokens, then the target's argmax")


def _accept_errors(L: Learner, g: torch.Generator) -> None:
    V = _n(g, 3, 8)
    u = lambda *s: torch.ones(*s) / V  # noqa: E731
    _expect_error(lambda: L.speculative_accept(u(3, V), u(3, V), torch.zeros(3, dtype=torch.long)), ValueError,
                  "p with k rows instead of k + 1")
    _expect_error(lambda: L.speculative_accept(u(3, V), u(2, V + 1), torch.zeros(2, dtype=torch.long)), ValueError,
                  "p and q over different vocabularies")
    _expect_error(lambda: L.speculative_accept(u(1, V), u(0, V), torch.zeros(0, dtype=torch.long)), ValueError,
                  "k = 0 proposals")


_SLOT_FORBIDDEN = Forbidden()
_PAGED_FORBIDDEN = Forbidden(patch=((F, "scaled_dot_product_attention", "torch's scaled_dot_product_attention"),))
_ACCEPT_FORBIDDEN = Forbidden()

TASKS = (
    Task("09.A", "the block allocator's step: a new block or copy-on-write", ("append_slot",), (
        Check("random appends, forks and frees == labkit's allocator; every sequence reads back its own tokens", 2,
              _slot_random_ops),
        Check("copy-on-write of a shared block, then a new block from the head of the free list", 1,
              _slot_cow_worked),
        Check("RuntimeError when out of blocks (nothing changed); ValueError for bad block_size or position", 1,
              _slot_errors),
    ), _SLOT_FORBIDDEN),
    Task("09.B", "attention through a block table", ("paged_attention",), (
        Check("scrambled tables, block sizes not dividing C, GQA == SDPA over the contiguous keys", 2, _paged_random),
        Check("a whole prompt (Tq = C), one decode step (Tq = 1), a single token", 1, _paged_prefill_decode),
        Check("slots past context_len in the last block are ignored", 1, _paged_ignores_the_rest),
    ), _PAGED_FORBIDDEN),
    Task("09.C", "speculative decoding's accept/reject step", ("speculative_accept",), (
        Check("the emitted token follows the target's p (chi-square), acceptance = Σ min(p, q)", 2,
              _accept_distribution),
        Check("p == q accepts all + a bonus; one-hot: accept while the argmaxes agree", 1, _accept_exact),
        Check("ValueError for shapes that do not fit (k + 1 rows of p, same vocabulary, k ≥ 1)", 1, _accept_errors),
    ), _ACCEPT_FORBIDDEN),
)
