"""Re-initialising a model's parameters, deterministically from a torch generator."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from fedsim.errors import ConfigError, check

NORMS = (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._NormBase)
WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def _default(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if reset is not None:
        reset()
    elif next(module.parameters(recurse=False), None) is not None:
        raise ConfigError(
            f"{type(module).__name__} has parameters but no reset_parameters(), "
            "so fedsim cannot re-initialise it"
        )


def _weights_then(fill: Callable[[torch.Tensor], object]) -> Callable[[nn.Module], None]:
    """A per-module initialiser: ``fill`` conv and linear weights, zero their biases."""

    def initialise(module: nn.Module) -> None:
        if isinstance(module, WEIGHTED):
            fill(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, NORMS):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:
            _default(module)

    return initialise


SCHEMES: dict[str, Callable[[nn.Module], None]] = {
    "default": _default,
    "xavier": _weights_then(nn.init.xavier_uniform_),
    "kaiming": _weights_then(lambda weight: nn.init.kaiming_normal_(weight, nonlinearity="relu")),
}


def initialize(model: nn.Module, scheme: str, generator: torch.Generator) -> None:
    """Re-initialise every parameter of ``model`` in place, from one draw of ``generator``.

    Schemes: ``default`` runs each module's own ``reset_parameters()``; ``xavier``
    (Glorot & Bengio 2010, uniform) and ``kaiming`` (He et al. 2015, normal, fan-in, ReLU
    gain) fill convolution and linear weights and zero their biases.  Under every scheme
    norm layers get weight 1 and bias 0 (their own reset does the same), and other modules
    with parameters use their ``reset_parameters()``.  The draws run on the CPU under a
    torch RNG seeded from ``generator`` (the global RNG is left as it was), so a model
    gets the same values on every device.
    """
    check(scheme in SCHEMES, f"init_scheme={scheme} is not one of: {', '.join(SCHEMES)}")
    seed = int(torch.randint(2**62, (1,), generator=generator))
    on_cpu = all(weight.device.type == "cpu" for weight in model.parameters())
    work = model if on_cpu else copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in work.modules():
            SCHEMES[scheme](module)
    if work is not model:
        with torch.no_grad():
            for weight, value in zip(model.parameters(), work.parameters(), strict=True):
                weight.copy_(value)
