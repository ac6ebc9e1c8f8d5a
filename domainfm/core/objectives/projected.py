"""The projection head of objectives that compare pooled embeddings, sized from the backbone.

:class:`ProjectedObjective` is the base of batch objectives that project the backbone's pooled
embedding of each view with their own MLP before comparing the views (SoftCon): it keeps the
widths, builds ``Linear(D, hidden) -> ReLU -> Linear(hidden, out)`` once ``D`` is known (given,
or the backbone's, see :class:`~domainfm.core.objectives.base.SizedFromBackbone`) and projects
a batch key with :meth:`ProjectedObjective.project`. The head has no normalization layer, so
each sample's projection depends on that sample only (the data-parallel contract of
:mod:`domainfm.core.objectives.base` holds without synchronized statistics).

The head's keywords are declared once, :class:`ProjectionArgs`: a subclass takes them as
``**head: Unpack[ProjectionArgs]`` (configs and recorded constructor arguments still spell
them flat: ``hidden_dim: 256``) and hands them to the base with its own default widths,
``super().__init__(head, defaults={"hidden_dim": ..., "out_dim": ...})``; the base refuses a
key outside :class:`ProjectionArgs`, naming the subclass.

Shapes::

    features.pooled(key)    (B, D)
    project(features, key)  (B, out_dim)

Example::

    >>> class Mine(ProjectedObjective):
    ...     def __init__(self, **head: Unpack[ProjectionArgs]):
    ...         super().__init__(head, defaults={"hidden_dim": 64, "out_dim": 16})
    ...         self.build_heads_if_sized()
    >>> mine = Mine(); mine.bind_backbone(vit)
    >>> mine.project(BatchFeatures(vit, batch), "view1").shape
    torch.Size([B, 16])
    >>> Mine(out_dim=8).out_dim
    8
    >>> Mine(hidden=8)
    TypeError: Mine() got unexpected keyword arguments ['hidden']
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives.base import SizedFromBackbone, require_at_least


class ProjectionArgs(TypedDict, total=False):
    """The projection head's keywords (``**head: Unpack[ProjectionArgs]``); each objective
    documents its own default widths.

    Attributes:
        embed_dim: the backbone's pooled width ``D``; ``None`` (the default): the backbone's,
            at binding.
        hidden_dim: hidden width of the head.
        out_dim: projection width.
    """

    embed_dim: int | None
    hidden_dim: int
    out_dim: int


PROJECTION_KEYS: frozenset[str] = (
    ProjectionArgs.__required_keys__ | ProjectionArgs.__optional_keys__
)
"""The keywords a :class:`ProjectedObjective` subclass takes as ``**head``."""


class ProjectedObjective(SizedFromBackbone):
    """Base of objectives with an MLP projection head over pooled embeddings (see the module
    docstring); a subclass calls :meth:`build_heads_if_sized` at the end of its constructor.

    Args:
        head: the subclass's ``**head`` keywords (:class:`ProjectionArgs`), as given.
        defaults: the subclass's widths for the keys ``head`` leaves out (``hidden_dim`` and
            ``out_dim``; ``embed_dim`` defaults to ``None``, the backbone's).
        bias: whether the head's linear layers have biases.

    Raises:
        TypeError: ``Owner() got unexpected keyword arguments [...]`` for a key of ``head``
            outside :class:`ProjectionArgs` (``Owner`` the subclass), or a width that neither
            ``head`` nor ``defaults`` gives.
        ValueError: a width below 1.
    """

    head: nn.Sequential

    def __init__(
        self, head: ProjectionArgs, *, defaults: ProjectionArgs, bias: bool = True
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        unknown = sorted(set(head) - PROJECTION_KEYS)
        if unknown:
            raise TypeError(f"{owner}() got unexpected keyword arguments {unknown}")
        widths: ProjectionArgs = {"embed_dim": None, **defaults, **head}
        missing = sorted(PROJECTION_KEYS - set(widths))
        if missing:
            raise TypeError(f"{owner}() has no default for {missing}")
        self.embed_dim = widths["embed_dim"]
        self.hidden_dim = widths["hidden_dim"]
        self.out_dim = widths["out_dim"]
        self.bias = bias
        require_at_least(
            1, embed_dim=self.embed_dim, hidden_dim=self.hidden_dim, out_dim=self.out_dim
        )

    def build_heads(self) -> None:
        """``Linear(D, hidden) -> ReLU -> Linear(hidden, out)``."""
        assert self.embed_dim is not None
        self.head = nn.Sequential(
            nn.Linear(self.embed_dim, self.hidden_dim, bias=self.bias),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden_dim, self.out_dim, bias=self.bias),
        )

    def project(self, features: BatchFeatures, key: str) -> Tensor:
        """The projected pooled embeddings ``(B, out_dim)`` of ``batch[key]``."""
        self.ensure_sized()
        out: Tensor = self.head(features.pooled(key))
        return out
