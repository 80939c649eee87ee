"""Training losses by name. Each takes raw model outputs (logits) and targets, returns a scalar.

A loss also says how to turn logits into predictions (`activation`), so evaluation, out-of-fold
predictions and `predict` agree with what was trained, and which output kinds it trains
(`kagglekit.targets`): ``bce``/``mse``/``huber``/``pearson`` a single score, ``ce``/``kl`` the
distributions of ``classes`` and ``bins`` outputs. Weighted sums are named by a spec string:
``get_loss("bce+0.5*pearson")``.

Every loss also takes optional per-row sample weights, ``fn(logits, targets, weights)``: the
per-row losses times their weights, averaged over the batch's rows, so a row of weight 0.5 (a
pseudo label, say) pulls half as hard as a labelled one, whatever else its batch holds; ``pearson``
becomes the weighted correlation. Without weights each is the plain batch mean.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from kagglekit._keys import POSITIVE


@dataclass(frozen=True)
class Loss:
    name: str
    fn: Callable[..., torch.Tensor]  # (logits, targets, weights=None) -> scalar
    activation: str  # "sigmoid", "identity" or "expected": logits -> predictions in the label's space
    outputs: tuple[str, ...] = ("single",)  # the output kinds it trains


# Losses are computed in fp32: under fp16 autocast the logits may be half precision.


def _mean(per_row: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The batch mean of per-row losses (B,), each times its sample weight when there are weights."""
    if weights is None:
        return per_row.mean()
    return (per_row * weights.float().reshape(per_row.shape)).mean()


def _bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    return _mean(F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none"), weights)


def _mse(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    return _mean(F.mse_loss(logits.float(), labels.float(), reduction="none"), weights)


def _soft_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against a target distribution: logits (B, C), target (B, C) rows summing to 1."""
    return _mean(-(target * F.log_softmax(logits.float(), dim=-1)).sum(-1), weights)


def _kl(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """KL(target || softmax(logits)), averaged over rows; zero when the prediction equals the target."""
    return _mean(F.kl_div(F.log_softmax(logits.float(), dim=-1), target.float(), reduction="none").sum(-1), weights)


def _huber(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None, delta: float = 1.0) -> torch.Tensor:
    """0.5 d² where |d| <= delta, delta (|d| - delta / 2) beyond: mse near the label, robust to outliers."""
    return _mean(F.huber_loss(logits.float(), labels.float(), delta=delta, reduction="none"), weights)


def _centred(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) → deviations from the weighted mean; exactly zero for a constant batch (not rounding noise)."""
    varies = (values.amax() != values.amin()).to(values.dtype)
    return (values - (values * weights).sum() / weights.sum()) * varies


def _pearson_r(preds: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) Pearson correlation over the batch in fp32; 0 where it is undefined (either side constant)."""
    p, t = preds.float().reshape(-1), labels.float().reshape(-1)  # (B,), (B,)
    w = torch.ones_like(p) if weights is None else weights.float().reshape(-1)
    x, y = _centred(p, w), _centred(t, w)
    sxx, syy = (w * x * x).sum(), (w * y * y).sum()
    one = torch.ones_like(sxx)
    # A zero sum of squares (its numerator is 0 then) is divided as 1: r = 0 and finite gradients,
    # where sqrt(0) in the denominator would put inf and NaN into backward.
    return (w * x * y).sum() / (torch.where(sxx > 0, sxx, one).sqrt() * torch.where(syy > 0, syy, one).sqrt())


def _pearson(preds: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """1 - Pearson r over the batch, in [0, 2]. A constant batch (all labels equal, a batch of one
    row, or all predictions equal) gives 1 and a zero gradient: no signal rather than NaN."""
    return 1 - _pearson_r(preds, labels, weights)


LOSSES: dict[str, Loss] = {
    "bce": Loss("bce", _bce, "sigmoid"),
    "mse": Loss("mse", _mse, "identity"),
    "huber": Loss("huber", partial(_huber, delta=1.0), "identity"),
    # Alone, pearson trains raw logits: its predictions are right only up to scale and shift, which
    # a correlation metric ignores. In a sum it follows the other terms' activation (see get_loss).
    "pearson": Loss("pearson", _pearson, "identity"),
    "ce": Loss("ce", _soft_ce, "expected", ("classes", "bins")),
    "kl": Loss("kl", _kl, "expected", ("classes", "bins")),
}
_FOLLOWS_ACTIVATION = frozenset({"pearson"})  # computed on the sum's predictions, whatever they are
_TERM = re.compile(r"^(?:(?P<weight>[^*]*)\*)?(?P<name>[^*]*)$")  # [weight*]name


def _term(name: str, huber_delta: float) -> Loss:
    """One registered loss with its options applied."""
    if name == "huber":
        return Loss("huber", partial(_huber, delta=huber_delta), "identity")
    return LOSSES[name]


def _parse(spec: str) -> list[tuple[float, str]]:
    """``"bce + 0.5*pearson"`` → ``[(1.0, "bce"), (0.5, "pearson")]``; a ValueError names the bad part."""

    def bad(problem: str) -> ValueError:
        return ValueError(
            f"loss {spec!r}: {problem}. Valid losses are {sorted(LOSSES)}; a weighted sum reads "
            "'bce+0.5*pearson' or '0.7*mse+0.3*pearson' (positive weights, terms joined by '+')."
        )

    terms, seen = [], set()
    for part in spec.split("+"):
        part = part.strip()
        match = _TERM.match(part)
        if not part or match is None:
            raise bad(f"term {part!r} is not of the form [weight*]name" if part else "empty term (a '+' with nothing on one side)")
        name = match["name"].strip()
        if not name:
            raise bad(f"term {part!r} has no loss name after its weight")
        if name not in LOSSES:
            raise bad(f"unknown loss {name!r}" + (f" in term {part!r}" if part != name else ""))
        weight = 1.0
        if match["weight"] is not None:
            try:
                weight = float(match["weight"])
            except ValueError:
                raise bad(f"weight {match['weight'].strip()!r} in term {part!r} is not a number") from None
            if not (math.isfinite(weight) and weight > 0):
                raise bad(f"weight {weight} in term {part!r} must be a positive number")
        if name in seen:
            raise bad(f"{name!r} appears twice; add up its weights")
        seen.add(name)
        terms.append((weight, name))
    return terms


def _on_predictions(fn: Callable, activation: str, logits: torch.Tensor, targets: torch.Tensor, weights=None) -> torch.Tensor:
    assert activation in ("identity", "sigmoid"), activation  # single-output activations only
    return fn(activate(logits, activation), targets, weights)


def _weighted_sum(terms: tuple, logits: torch.Tensor, targets: torch.Tensor, weights=None) -> torch.Tensor:
    return sum(weight * fn(logits, targets, weights) for weight, fn in terms)


def _combine(spec: str, terms: list[tuple[float, Loss]]) -> Loss:
    outputs = tuple(kind for kind in terms[0][1].outputs if all(kind in loss.outputs for _, loss in terms))
    if not outputs:
        kinds = ", ".join(f"{loss.name}: {list(loss.outputs)}" for _, loss in terms)
        raise ValueError(f"loss {spec!r}: its terms train different outputs ({kinds}); combine losses of one output kind.")
    fixed = {loss.name: loss.activation for _, loss in terms if loss.name not in _FOLLOWS_ACTIVATION}
    if len(set(fixed.values())) > 1:
        which = ", ".join(f"{name} through {activation}" for name, activation in fixed.items())
        raise ValueError(
            f"loss {spec!r}: its terms predict differently ({which}); a sum needs one activation: "
            "combine bce with pearson, or mse/huber with pearson."
        )
    activation = next(iter(fixed.values()), "identity")
    fns = tuple(
        (weight, partial(_on_predictions, loss.fn, activation) if loss.name in _FOLLOWS_ACTIVATION else loss.fn)
        for weight, loss in terms
    )
    name = "+".join(loss.name if weight == 1 else f"{_number(weight)}*{loss.name}" for weight, loss in terms)
    return Loss(name, partial(_weighted_sum, fns), activation, outputs)


def _number(weight: float) -> str:
    return str(int(weight)) if weight.is_integer() else repr(weight)  # shortest text that reads back the same


def get_loss(name: str | Loss, *, huber_delta: float = 1.0) -> Loss:
    """Look a loss up by name or weighted-sum spec; a Loss passes straight through.

    A spec such as ``"bce+0.5*pearson"`` gives one Loss whose fn is the weighted sum of its terms
    and whose ``name`` is the spec in canonical form (reads back to the same loss). Its terms must
    train a common output kind and predict through one activation, which becomes the sum's:
    ``bce+mse`` is an error (sigmoid vs identity). ``pearson`` fixes no activation: in a sum it is
    computed between the *predictions* (the activation applied to the logits: sigmoid(logits) with
    bce, the raw logits with mse/huber) and the labels, so it optimises the correlation of what the
    metric will score; alone it runs on the raw logits.

    Args:
        name: a name in `LOSSES`, a spec ``[w*]name+[w*]name...``, or a Loss.
        huber_delta: huber's delta (> 0): quadratic within it, linear beyond. Other losses ignore
            it, so a config can always pass it.

    Example:
        >>> loss = get_loss("bce+0.5*pearson")
        >>> loss.fn(logits, labels), loss.activation  # (tensor(...), 'sigmoid')
    """
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str):
        raise TypeError(f"loss must be a name such as 'bce' or a Loss, got {type(name).__name__} {name!r}.")
    POSITIVE.check("huber_delta", huber_delta, what="the Huber loss's threshold", fix="1.0 is usual")
    terms = _parse(name)
    if len(terms) == 1 and terms[0][0] == 1:
        return _term(terms[0][1], huber_delta)
    return _combine(name, [(weight, _term(term, huber_delta)) for weight, term in terms])


def default_loss(output: str, label_range: tuple[float, float]) -> str:
    """The loss ``loss=auto`` picks: bce for a single score in [0, 1], mse for other scores, ce otherwise."""
    if output != "single":
        return "ce"
    return "bce" if label_range[0] >= 0 and label_range[1] <= 1 else "mse"


def check_loss_output(loss: Loss, output: str) -> None:
    if output not in loss.outputs:
        fits = sorted(name for name, other in LOSSES.items() if output in other.outputs)
        raise ValueError(f"config key 'loss': {loss.name!r} does not train output={output!r}; use one of {fits} (or loss=auto).")


def activate(logits: torch.Tensor, activation: str, values: Sequence[float] = ()) -> torch.Tensor:
    """Map logits to predictions in the label's space: (B,) for a single score, (B, C) → (B,) otherwise."""
    if activation == "sigmoid":
        return torch.sigmoid(logits.float())
    if activation == "identity":
        return logits.float()
    if activation == "expected":
        centres = torch.tensor(values, dtype=torch.float32, device=logits.device)  # (C,)
        return torch.softmax(logits.float(), dim=-1) @ centres
    raise ValueError(f"unknown activation {activation!r}; valid: ['expected', 'identity', 'sigmoid'].")
