"""The residual two-layer MLP that refines wavelength codes in DOFA and Clay.

DOFA's dynamic patch embedding (Xiong et al. 2024, arXiv:2403.15356; TorchGeo's
``FCResLayer``) and Clay's copy of it (``claymodel/factory.py`` ``FCBlock``) pass each band's
sin-cos wavelength code through ``x + act(second(act(first(x))))`` with two square linear
layers. The two releases differ only in the activation (ReLU in DOFA, GELU in Clay) and in
the names of the layers in their state dicts (``w1``/``w2``, ``l1``/``l2``), which
:class:`ResidualMLP` takes as arguments so that each release's keys load unchanged.

Example::

    >>> mlp = ResidualMLP(128, activation=F.relu, layer_names=("w1", "w2"))
    >>> sorted(mlp.state_dict())[:2], mlp(torch.zeros(3, 128)).shape
    (['w1.bias', 'w1.weight'], torch.Size([3, 128]))
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


class ResidualMLP(nn.Module):
    """``x + activation(second(activation(first(x))))`` over two ``dim × dim`` linears.

    Args:
        dim: width of the codes.
        activation: the nonlinearity (``F.relu``, ``F.gelu``).
        layer_names: the two linears' names, as the release stores them.
    """

    def __init__(
        self, dim: int, *, activation: Callable[[Tensor], Tensor], layer_names: tuple[str, str]
    ) -> None:
        super().__init__()
        self.activation = activation
        self.layer_names = layer_names
        for name in layer_names:
            self.add_module(name, nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        first, second = (self.get_submodule(name) for name in self.layer_names)
        out: Tensor = x + self.activation(second(self.activation(first(x))))
        return out
