"""Training helpers of the published recipe (docs/design.md, Training recipe): weight EMA, initialisation, the
per-epoch learning rate and the optimizer."""
from __future__ import annotations

import math
from copy import deepcopy

import torch
from torch import nn

from utils.errors import SSTNetError

NOMINAL_BATCH = 64  # learning rates are given for this batch size and scaled linearly to the real one

# (lower, upper) bounds of the scaled base and minimum learning rates, the released training script's
# (docs/design.md, Training recipe); for Adam, base [3e-4, 1e-3] and min = base bounds / 100.
LR_BOUNDS = {
    "sgd": ((5e-4, 5e-2), (5e-6, 5e-4)),
    "adam": ((3e-4, 1e-3), (3e-6, 1e-5)),
}
OPTIMIZERS = tuple(LR_BOUNDS)
LR_DECAYS = ("cos", "step")
STEP_DECAY_STEPS = 10  # the release's step schedule drops the rate 9 times, every tenth of the run
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DataParallel / DistributedDataParallel wrapper (or the model itself)."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


class ModelEMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers), as in YOLOX.

    After the n-th :meth:`update`, every float entry v of the state dict becomes ``d·v + (1 − d)·model_v`` with
    ``d = decay·(1 − exp(−n / tau))``, so early updates follow the model closely. Integer buffers (BatchNorm's
    ``num_batches_tracked``) keep the value they had when the EMA was created. ``updates`` lets a resumed run
    continue the ramp (the release sets it to steps-per-epoch × start epoch).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.ema = deepcopy(unwrap_model(model)).eval()
        self.decay_max = decay
        self.tau = tau
        self.updates = updates
        for parameter in self.ema.parameters():
            parameter.requires_grad_(False)

    def decay(self, updates: int) -> float:
        """The averaging weight kept from the EMA at update number ``updates``."""
        return self.decay_max * (1 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` into the average."""
        self.updates += 1
        keep = self.decay(self.updates)
        model_state = unwrap_model(model).state_dict()
        for key, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(keep).add_(model_state[key].detach().to(value.dtype), alpha=1 - keep)

    def state_dict(self) -> dict:
        """The averaged weights and the update count, for checkpoints."""
        return {"ema": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.ema.load_state_dict(state["ema"])
        self.updates = int(state["updates"])


def init_weights(model: nn.Module, init_type: str = "normal", gain: float = 0.02) -> None:
    """Initialise ``model`` in place as the released ``weights_init`` does.

    Convolution weights: N(0, ``gain``) for ``normal`` (the default, std 0.02), else Xavier-normal with
    ``gain``, Kaiming-normal (fan-in) or orthogonal with ``gain``. BatchNorm2d: weight N(1, 0.02), bias 0.
    Convolution biases and every other module (Linear, attention) keep PyTorch's default initialisation.
    """
    if init_type not in INIT_TYPES:
        raise SSTNetError(f"init_type {init_type!r}: expected one of {', '.join(INIT_TYPES)}")
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            if init_type == "normal":
                nn.init.normal_(module.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(module.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(module.weight, gain=gain)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


def _check_optimizer_name(optimizer: str) -> str:
    name = optimizer.lower()
    if name not in OPTIMIZERS:
        raise SSTNetError(f"optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    return name


def scaled_lrs(base_lr: float, min_lr: float, batch_size: int, optimizer: str = "sgd") -> tuple[float, float]:
    """Scale the base and minimum learning rates by ``batch_size / 64`` and clip them to the bounds.

    SGD (the published recipe): base in [5e-4, 5e-2], min in [5e-6, 5e-4]. Adam (the released script's values,
    outside the published recipe): base in [3e-4, 1e-3], min in [3e-6, 1e-5]. Returns (base, min).
    """
    (base_low, base_high), (min_low, min_high) = LR_BOUNDS[_check_optimizer_name(optimizer)]
    ratio = batch_size / NOMINAL_BATCH
    return min(max(ratio * base_lr, base_low), base_high), min(max(ratio * min_lr, min_low), min_high)


def warmup_epochs(total_epochs: int) -> float:
    """Length of the quadratic warm-up: 5 % of the epochs, at least 1 and at most 3 (may be fractional)."""
    return min(max(0.05 * total_epochs, 1), 3)


def no_aug_epochs(total_epochs: int) -> float:
    """Length of the final stretch held at the minimum rate: 5 % of the epochs, between 1 and 15."""
    return min(max(0.05 * total_epochs, 1), 15)


def lr_at_epoch(epoch: int, total_epochs: int, lr: float, min_lr: float, decay: str = "cos") -> float:
    """The learning rate of (0-based) ``epoch`` under the release's schedule ``decay``: ``cos`` (the default,
    :func:`warm_cosine_lr`) or ``step`` (:func:`step_lr`)."""
    if decay not in LR_DECAYS:
        raise SSTNetError(f"lr decay {decay!r}: expected one of {', '.join(LR_DECAYS)}")
    if total_epochs < 1:
        raise SSTNetError(f"epochs {total_epochs}: must be at least 1")
    if decay == "step":
        return step_lr(epoch, total_epochs, lr, min_lr)
    return warm_cosine_lr(epoch, total_epochs, lr, min_lr)


def warm_cosine_lr(epoch: int, total_epochs: int, lr: float, min_lr: float) -> float:
    """The learning rate of (0-based) ``epoch`` under YOLOX's "warm cosine" schedule, stepped per epoch.

    With W = :func:`warmup_epochs` and N = :func:`no_aug_epochs`: for epoch ≤ W a quadratic ramp from
    ``max(0.1·lr, 1e-6)`` to ``lr``; for epoch ≥ E − N ``min_lr``; in between a half cosine from ``lr`` down to
    ``min_lr`` over E − W − N epochs. The warm-up test comes first, so it wins when E is tiny.
    """
    warmup = warmup_epochs(total_epochs)
    no_aug = no_aug_epochs(total_epochs)
    if epoch <= warmup:
        start = max(0.1 * lr, 1e-6)
        return (lr - start) * (epoch / warmup) ** 2 + start
    if epoch >= total_epochs - no_aug:
        return min_lr
    progress = (epoch - warmup) / (total_epochs - warmup - no_aug)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def step_lr(epoch: int, total_epochs: int, lr: float, min_lr: float, steps: int = STEP_DECAY_STEPS) -> float:
    """The learning rate of (0-based) ``epoch`` under the release's step schedule (no warm-up).

    The rate is multiplied by ``(min_lr / lr) ** (1 / (steps − 1))`` every ``E / steps`` epochs (a float), i.e.
    ``lr · rate ** floor(epoch / (E / steps))``: ``lr`` for the first tenth of the run, ``min_lr`` for the last.
    Needs E ≥ ``steps`` (the release refuses shorter steps than one epoch).
    """
    step_size = total_epochs / steps
    if step_size < 1:
        raise SSTNetError(f"step lr decay: needs at least {steps} epochs (the rate drops every epochs/{steps} "
                          f"epochs), got {total_epochs}")
    rate = (min_lr / lr) ** (1 / (steps - 1))
    return lr * rate ** (epoch // step_size)


def set_requires_grad(module: nn.Module, trainable: bool) -> None:
    """Freeze (``trainable`` False) or unfreeze every parameter of ``module``; a frozen parameter gets no gradient,
    so the optimizer leaves it (and its momentum) alone until it is unfrozen."""
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def set_optimizer_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the learning rate ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def _is_batchnorm(name: str, module: nn.Module) -> bool:
    # The release also treats any module whose qualified name contains "bn" as a BatchNorm.
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or "bn" in name


def parameter_groups(model: nn.Module, include_all_params: bool = False) -> dict[str, list[nn.Parameter]]:
    """Split the parameters of ``model`` into ``no_decay`` (BatchNorm weights), ``decay`` and ``bias``.

    As released, only the ``.weight`` and ``.bias`` attributes of each module are collected: a module's
    ``.bias`` (an ``nn.Parameter``) goes to ``bias``; a BatchNorm's ``.weight`` to ``no_decay``; any other
    module's ``.weight`` to ``decay``. Parameters held under other names (``nn.MultiheadAttention``'s
    ``in_proj_weight``/``in_proj_bias``, bare ``nn.Parameter``s or ``nn.ParameterList`` entries) are left out
    and never train. ``include_all_params=True`` (our option) adds every parameter left out: those with two or
    more dimensions to ``decay``, the others to ``no_decay``. Frozen parameters are grouped too, so that
    unfreezing them later makes them train.
    """
    groups: dict[str, list[nn.Parameter]] = {"no_decay": [], "decay": [], "bias": []}
    seen: set[int] = set()

    def add(group: str, parameter: object) -> None:
        if isinstance(parameter, nn.Parameter) and id(parameter) not in seen:
            seen.add(id(parameter))
            groups[group].append(parameter)

    for name, module in model.named_modules():
        add("bias", getattr(module, "bias", None))
        add("no_decay" if _is_batchnorm(name, module) else "decay", getattr(module, "weight", None))
    if include_all_params:
        for parameter in model.parameters():
            add("decay" if parameter.dim() >= 2 else "no_decay", parameter)
    return groups


def build_optimizer(model: nn.Module, optimizer: str = "sgd", *, lr: float, momentum: float = 0.937,
                    weight_decay: float = 5e-4, include_all_params: bool = False) -> torch.optim.Optimizer:
    """SGD (Nesterov, ``momentum``) or Adam (betas (``momentum``, 0.999)) over :func:`parameter_groups`.

    Weight decay applies to the ``decay`` group only. Each parameter group carries its ``name``
    (``no_decay``, ``decay``, ``bias``; empty groups are omitted).
    """
    name = _check_optimizer_name(optimizer)
    decays = {"no_decay": 0.0, "decay": weight_decay, "bias": 0.0}
    param_groups = [{"params": params, "weight_decay": decays[group], "name": group}
                    for group, params in parameter_groups(model, include_all_params).items() if params]
    if not param_groups:
        raise SSTNetError("model: has no parameters to optimise")
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=(momentum, 0.999))
    return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, nesterov=True)
