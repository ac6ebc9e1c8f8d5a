"""MoCHi: synthetic hard negatives mixed from each query's hardest negatives.

Kalantidis, Sariyildiz, Pion, Weinzaepfel & Larlus 2020, "Hard Negative Mixing for
Contrastive Learning", NeurIPS 2020, arXiv:2010.01028, Sec. 4. For an L2-normalized query
``q`` with negatives ``n_1 .. n_M`` (MoCo's queue, or SimCLR's other in-batch embeddings),
order the negatives by their logit ``q.n / t``, hardest first, and keep the ``N`` hardest,
``Q~^N``. Then synthesize, per query,

* ``s`` mixes of two hard negatives (Sec. 4.1)::

      h_k  = h~_k / ||h~_k||,   h~_k  = a_k n_i + (1 - a_k) n_j,    n_i, n_j in Q~^N,  a_k ~ U(0, 1)

* ``s'`` mixes of the query with one hard negative (Sec. 4.2, "even harder negatives")::

      h'_k = h~'_k / ||h~'_k||, h~'_k = b_k q + (1 - b_k) n_j,      n_j in Q~^N,  b_k ~ U(0, 0.5)

  ``b_k < 0.5``: the query contributes less than the negative.

and append them to that query's negatives: the loss's denominator gains
``sum_k exp(q.h_k / t) + sum_k exp(q.h'_k / t)``. The indices ``i, j`` are drawn uniformly
and independently (``i = j`` allowed) over the ranks ``0 .. N - 1`` of ``Q~^N``.

**Gradients.** The synthetic negatives are constants: no gradient flows through their
ingredients, only through the query of the logit ``q.h / t``. With MoCo this is the paper's
method exactly (its negatives are queue keys, constants already, and the query's share of
``h'`` is stopped, Sec. 4.2); applied to in-batch negatives (InfoNCE) it is the same rule.
The synthetic negatives are used for one loss and never enqueued.

**Randomness.** Each call draws its indices and coefficients (:class:`MixingDraws`) from
torch's global RNG on the queries' device (seeded by Lightning's ``seed_everything``, and
restored on resume by :class:`~domainfm.tasks.pretrain_module.PretrainModule`), or takes
them injected (tests). Draws are made for the *global* batch of anchors and each rank keeps
its own rows, so with the same RNG state on every rank a data-parallel run draws exactly what
one process on the concatenated batch draws.

``N`` is clamped to the number of negatives a query has (a small global batch under
InfoNCE has only ``2 n - 2``); with none, nothing is synthesized.

Shapes::

    queries    (A, D)    unit anchors (with gradient)
    negatives  (M, D)    unit candidates
    hardness   (A, M)    logits of the anchors against the candidates; -inf where a
                         candidate is not a negative of that anchor (itself, its positive)
    draws      (A_global, s) and (A_global, s')
    output     (A, s + s') extra logits, to concatenate after the real ones

Example::

    mixing = HardNegativeMixing(hard=1024, pairs=512, query=256)   # "MoCHi (1024, 512, 256)"
    logits = torch.cat([logits, mixing.synthetic_logits(q, queue, q @ queue.T,
                                                       temperature=0.2)], dim=1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from domainfm.core.objectives.base import require_at_least


class HardNegativeMixingArgs(TypedDict, total=False):
    """The MoCHi keywords of a contrastive objective (``**mixing: Unpack[...]``); all off by
    default.

    Keys:
        mixing_hard: ``N``, how many of each query's hardest negatives are mixed (>= 1);
            ``None`` (default): no mixing.
        mixing_pairs: ``s``, synthetic negatives mixed from two hard negatives (>= 0).
        mixing_query: ``s'``, synthetic negatives mixed from the query and a hard
            negative (>= 0).
    """

    mixing_hard: int | None
    mixing_pairs: int
    mixing_query: int


@dataclass(frozen=True)
class MixingDraws:
    """The random choices of one mixing call, one row per anchor.

    Attributes:
        first: ``(A, s)`` long, rank in ``Q~^N`` (0 = hardest) of ``n_i``.
        second: ``(A, s)`` long, rank of ``n_j``.
        alpha: ``(A, s)`` mixing coefficients ``a_k`` in ``[0, 1)``.
        partner: ``(A, s')`` long, rank of the hard negative mixed with the query.
        beta: ``(A, s')`` query coefficients ``b_k`` in ``[0, 0.5)``.
    """

    first: Tensor
    second: Tensor
    alpha: Tensor
    partner: Tensor
    beta: Tensor

    def rows(self, index: Tensor) -> MixingDraws:
        """The draws of the anchors ``index`` (a long tensor of rows)."""
        return MixingDraws(*(t[index.to(t.device)] for t in self._fields()))

    def to(self, like: Tensor) -> MixingDraws:
        """The draws on ``like``'s device, coefficients in its dtype."""
        first, second, alpha, partner, beta = self._fields()
        device = like.device
        return MixingDraws(
            first.to(device), second.to(device), alpha.to(like), partner.to(device), beta.to(like)
        )

    def _fields(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.first, self.second, self.alpha, self.partner, self.beta


@dataclass(frozen=True)
class HardNegativeMixing:
    """MoCHi's synthetic hard negatives (see the module docstring).

    Attributes:
        hard: ``N``, hardest negatives kept per query (>= 1).
        pairs: ``s``, negative-negative mixes per query (>= 0).
        query: ``s'``, query-negative mixes per query (>= 0); ``pairs + query >= 1``.
    """

    hard: int
    pairs: int = 0
    query: int = 0

    def __post_init__(self) -> None:
        require_at_least(1, mixing_hard=self.hard)
        require_at_least(0, mixing_pairs=self.pairs, mixing_query=self.query)
        if self.pairs + self.query == 0:
            raise ValueError(
                f"mixing_hard={self.hard} synthesizes nothing: give mixing_pairs and/or "
                "mixing_query > 0"
            )

    @classmethod
    def from_keywords(cls, mixing: HardNegativeMixingArgs) -> HardNegativeMixing | None:
        """The mixing an objective's ``**mixing`` keywords ask for; ``None`` when off.

        Raises:
            TypeError: on a keyword that is not one of :class:`HardNegativeMixingArgs`.
            ValueError: on a bad value, or ``mixing_pairs`` / ``mixing_query`` without
                ``mixing_hard``.
        """
        unknown = sorted(set(mixing) - set(HardNegativeMixingArgs.__annotations__))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {unknown}")
        hard = mixing.get("mixing_hard")
        pairs, query = int(mixing.get("mixing_pairs", 0)), int(mixing.get("mixing_query", 0))
        if hard is None:
            if pairs or query:
                raise ValueError(
                    f"mixing_pairs={pairs} / mixing_query={query} need mixing_hard, the number "
                    "of hardest negatives to mix"
                )
            return None
        return cls(hard=int(hard), pairs=pairs, query=query)

    def draw(
        self,
        anchors: int,
        hard: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
    ) -> MixingDraws:
        """Draw the indices (uniform over ``0 .. hard - 1``) and coefficients of ``anchors``
        rows, in the order ``first, second, alpha, partner, beta``, from ``generator`` (the
        global RNG of ``device`` if ``None``)."""

        def ranks(count: int) -> Tensor:
            return torch.randint(hard, (anchors, count), generator=generator, device=device)

        def uniform(count: int) -> Tensor:
            return torch.rand((anchors, count), generator=generator, device=device, dtype=dtype)

        first, second, alpha = ranks(self.pairs), ranks(self.pairs), uniform(self.pairs)
        partner, beta = ranks(self.query), 0.5 * uniform(self.query)
        return MixingDraws(first=first, second=second, alpha=alpha, partner=partner, beta=beta)

    @torch.no_grad()
    def synthesize(
        self, queries: Tensor, negatives: Tensor, hardness: Tensor, draws: MixingDraws
    ) -> Tensor:
        """The ``(A, s + s', D)`` unit synthetic negatives (constants) of ``queries``, from
        their ``N`` hardest negatives ``hardness.topk(N)`` (``N`` clamped as documented)."""
        hardest = hardness.topk(_hard_count(self.hard, hardness), dim=1).indices  # (A, N)

        def pick(ranks: Tensor) -> Tensor:  # (A, k) ranks in Q~^N -> (A, k, D) negatives
            return negatives[hardest.gather(1, ranks)]

        alpha, beta = draws.alpha[..., None], draws.beta[..., None]
        mixed = alpha * pick(draws.first) + (1 - alpha) * pick(draws.second)  # (A, s, D)
        harder = beta * queries[:, None] + (1 - beta) * pick(draws.partner)  # (A, s', D)
        return F.normalize(torch.cat([mixed, harder], dim=1), dim=-1)

    def synthetic_logits(
        self,
        queries: Tensor,
        negatives: Tensor,
        hardness: Tensor,
        *,
        temperature: float,
        rows: Tensor | None = None,
        total: int | None = None,
        draws: MixingDraws | None = None,
    ) -> Tensor:
        """The logits ``(A, s + s')`` of ``queries`` against their synthetic negatives,
        ``q.h / t``, differentiable in ``queries`` only.

        Args:
            queries: ``(A, D)`` unit anchors.
            negatives: ``(M, D)`` unit candidates.
            hardness: ``(A, M)`` anchors' logits against the candidates, ``-inf`` where a
                candidate is not a negative of the anchor (only the order matters).
            temperature: ``t``.
            rows: the anchors' rows in the global batch of ``total`` anchors (default: all
                of ``0 .. A - 1``).
            total: anchors in the global batch (default ``A``); draws are made for all of
                them and ``rows`` kept, so ranks draw what one process would.
            draws: injected draws for the ``total`` anchors (``None``: drawn here).

        Raises:
            ValueError: if injected draws do not fit (shapes, or ranks ``>= N``).
        """
        a = queries.shape[0]
        hard = _hard_count(self.hard, hardness)
        if hard == 0:  # no negative to mix
            return queries.new_zeros(a, 0)
        if rows is None:
            rows = torch.arange(a, device=queries.device)
        if draws is None:
            size = a if total is None else total
            draws = self.draw(size, hard, device=queries.device, dtype=queries.dtype)
        draws = draws.rows(rows).to(queries)
        self._check(draws, a, hard)
        synthetic = self.synthesize(queries.detach(), negatives.detach(), hardness.detach(), draws)
        return torch.einsum("ad,asd->as", queries, synthetic) / temperature

    def _check(self, draws: MixingDraws, anchors: int, hard: int) -> None:
        shapes = {
            "first": (draws.first, self.pairs),
            "second": (draws.second, self.pairs),
            "alpha": (draws.alpha, self.pairs),
            "partner": (draws.partner, self.query),
            "beta": (draws.beta, self.query),
        }
        for name, (value, width) in shapes.items():
            if tuple(value.shape) != (anchors, width):
                raise ValueError(
                    f"draws.{name} must be ({anchors}, {width}), got {tuple(value.shape)}"
                )
        for name in ("first", "second", "partner"):
            value = getattr(draws, name)
            if value.numel() and not 0 <= int(value.min()) <= int(value.max()) < hard:
                raise ValueError(f"draws.{name} must index the {hard} hardest negatives")


def _hard_count(hard: int, hardness: Tensor) -> int:
    """``N`` clamped to the fewest negatives any anchor has (finite entries of a row)."""
    if hardness.shape[0] == 0:
        return 0
    return min(hard, int(torch.isfinite(hardness).sum(dim=1).min()))
