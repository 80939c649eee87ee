"""Adversarial training: FGM and PGD on the word embeddings, AWP on the weights, behind one contract.

Each adversary is a small object: ``attack()`` perturbs, ``restore()`` puts the weights back bit for
bit, and ``attack_backward(forward_loss, backward)`` - what `kagglekit.train.loop.train_step` calls
right after a micro-step's scaled backward - attacks, runs the forward and the (scaled) backward,
and restores, so the adversarial gradient is ADDED to the normal one.

About 530 lines, over the usual 350: the three adversaries are 150 lines together, and the rest is the
contract they share (the bit-exact save and restore, the gradient bookkeeping under accumulation and of
frozen tables, the registry), which only they use; split apart, each file would import the others' private parts.
"""

from __future__ import annotations

import difflib
import inspect
import math
import weakref
from typing import Callable

import torch
from torch import nn

__all__ = ["ADVERSARIES", "AWP", "FGM", "PGD", "create_adversary"]


def _norm(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm of the whole tensor, accumulated in fp32 (fp16 gradients would overflow the sum of squares)."""
    return torch.linalg.vector_norm(tensor, dtype=torch.float32)


class _RowGrad:
    """The gradient of a frozen embedding table as its non-zero rows: the sum, over the positions of each token, of
    the gradient reaching the table's output, which is what the table's own gradient would be were it trained, kept
    without a (V, H) tensor.

    Args:
        rows: (R,) token ids, sorted and distinct.
        values: (R, H) their gradient rows, fp32.
    """

    def __init__(self, rows: torch.Tensor, values: torch.Tensor):
        self.rows, self.values = rows, values

    @classmethod
    def of(cls, ids: torch.Tensor, grad: torch.Tensor) -> "_RowGrad":
        """From the ids looked up (any shape) and the gradient of the looked-up vectors (ids' shape + (H,))."""
        rows, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        flat = grad.reshape(-1, grad.shape[-1]).to(torch.float32)
        values = torch.zeros(len(rows), flat.shape[1], dtype=torch.float32, device=flat.device).index_add_(0, inverse, flat)
        keep = _nonzero_rows(values)
        return cls(rows[keep], values[keep])

    def plus(self, other: "_RowGrad") -> "_RowGrad":
        return _RowGrad.of(torch.cat([self.rows, other.rows]), torch.cat([self.values, other.values]))


def _inv_norm(grad: torch.Tensor | _RowGrad | None) -> float | None:
    """1 / ||grad||, or None when there is nothing to follow: no gradient, a zero one, inf/NaN.

    Under a GradScaler the gradient is scaled by s, and s·g / ||s·g|| = g / ||g||: the direction, which
    is all these attacks use, does not depend on the scale. inf/NaN is an fp16 overflow, whose optimizer
    step the scaler skips anyway.
    """
    if grad is None:
        return None
    norm = _norm(grad.values if isinstance(grad, _RowGrad) else grad).item()
    return 1.0 / norm if math.isfinite(norm) and norm > 0 else None


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {name}={value!r}.")
    return float(value)


def _steps(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"steps must be an integer of 1 or more, got steps={value!r}.")
    return value


def _nonzero_rows(grad: torch.Tensor) -> torch.Tensor:
    """(rows,) bool: rows of a 2-D gradient that are not all zero (a fused row norm: no copy of `grad`)."""
    return torch.linalg.vector_norm(grad, dim=1, dtype=torch.float32) > 0


class _Original:
    """The original values of what an attack moves in one parameter, to put back bit for bit.

    The whole tensor, or for an embedding matrix only its rows that have a gradient (the batch's
    tokens): a move along the gradient leaves the other rows as they are. On a 128k x 1024 vocabulary
    that keeps a few MB instead of 512 MB and skips passes over the untouched rows. A frozen table's
    gradient comes as its rows already (`_RowGrad`).
    """

    def __init__(self, param: nn.Parameter, grad: torch.Tensor | _RowGrad, by_rows: bool):
        self.param = param
        self.rows = None
        if isinstance(grad, _RowGrad):
            self.rows = grad.rows.clone()
        elif by_rows and grad.dim() == 2:
            rows = _nonzero_rows(grad).nonzero().squeeze(1)  # (R,)
            self.rows = rows if 2 * rows.numel() <= grad.shape[0] else None  # mostly zero rows: an embedding
        self.values = param.detach().clone() if self.rows is None else param.index_select(0, self.rows)

    def cover(self, grad: torch.Tensor) -> int:
        """Take in rows where a later step's gradient is non-zero and that are not kept yet; how many."""
        if self.rows is None:
            return 0
        if isinstance(grad, _RowGrad):
            new = grad.rows[~torch.isin(grad.rows, self.rows)]
        else:
            new = _nonzero_rows(grad)
            new[self.rows] = False
            new = new.nonzero().squeeze(1)
        if new.numel():
            self.values = torch.cat([self.values, self.param.index_select(0, new)])
            self.rows = torch.cat([self.rows, new])
        return new.numel()

    def part(self, tensor: torch.Tensor | _RowGrad) -> torch.Tensor:
        """The kept part of a parameter-shaped tensor: itself, or a copy of the kept rows (a `_RowGrad`'s rows in the
        kept rows' order, zero where it has none)."""
        if isinstance(tensor, _RowGrad):
            out = tensor.values.new_zeros((len(self.rows), tensor.values.shape[1]))
            order = torch.argsort(self.rows)
            out[order[torch.searchsorted(self.rows[order], tensor.rows)]] = tensor.values
            return out
        return tensor if self.rows is None else tensor.index_select(0, self.rows)

    def write(self, values: torch.Tensor) -> None:
        """Set the kept part of the parameter (a no-op when `values` is the parameter itself)."""
        if self.rows is not None:
            self.param.index_copy_(0, self.rows, values.to(self.param.dtype))
        elif values is not self.param:
            self.param.copy_(values)

    def restore(self) -> None:
        self.write(self.values)


class _Adversary:
    """The loop shared by the three attacks: attack → forward → backward, `steps` times, then restore.

    Steps before the last follow the adversarial gradient alone (the normal gradients are taken out
    first); the last puts the normal gradients back, so its adversarial gradient is added to them.
    """

    model: nn.Module
    steps: int = 1
    _saved: dict[str, _Original]  # parameter name -> its original values, while attacked
    _grad_backup: list | None = None  # (parameter, gradient) pairs taken by backup_grad

    def attack(self) -> bool:  # perturb; False when nothing was perturbed
        raise NotImplementedError

    def _keep(self, name: str, param: nn.Parameter, grad: torch.Tensor, by_rows: bool) -> tuple[_Original, int]:
        """The parameter's original values, kept at its first move; and how many rows this move adds."""
        saved = self._saved.get(name)
        if saved is None:
            saved = self._saved[name] = _Original(param, grad, by_rows)
            return saved, 0
        return saved, saved.cover(grad)

    @torch.no_grad()
    def restore(self) -> None:
        """Put every perturbed weight back, bit for bit."""
        for saved in self._saved.values():
            saved.restore()
        self._saved.clear()

    def attack_backward(self, forward_loss: Callable[[], torch.Tensor], backward: Callable[[torch.Tensor], None]) -> float:
        """Attack, run the adversarial forward and backward, restore; called after the normal backward.

        Args:
            forward_loss: the micro-step's forward under autocast, returning the loss already divided
                by the accumulation steps.
            backward: ``backward(loss)``, e.g. ``scaler.scale(loss).backward()``: the adversarial loss is
                scaled like the normal one and its gradient accumulates onto the normal gradient.

        Returns:
            The last adversarial loss (``forward_loss().item()``). NaN when the attack was skipped
            because the gradient it follows was missing, zero or not finite (an fp16 overflow: the
            scaler skips that step anyway); then no forward runs and nothing changes. A non-finite
            adversarial loss is returned but not backpropagated.
        """
        value = float("nan")
        try:
            for step in range(self.steps):
                if not self.attack() and step == 0:
                    return value
                if step < self.steps - 1:
                    self.backup_grad()  # the next step follows this step's adversarial gradient alone
                else:
                    self.restore_grad()  # the last adversarial gradient adds to the normal one
                loss = forward_loss()
                value = loss.item()
                if math.isfinite(value):
                    backward(loss)
        finally:
            self.restore()
            self.restore_grad()
        return value

    def backup_grad(self) -> None:
        """Take every gradient out of the model (the tensors themselves, no copy), leaving None.

        What the usual routine's clone + ``zero_grad()`` amounts to, without a copy of the gradients.
        Called again before `restore_grad`, it drops the gradients made since (the adversarial ones).
        """
        if self._grad_backup is None:
            self._grad_backup = [(p, p.grad) for p in self.model.parameters()]
        for p in self.model.parameters():
            p.grad = None

    def restore_grad(self) -> None:
        """Put back the gradients `backup_grad` took (a no-op without a backup)."""
        saved, self._grad_backup = self._grad_backup, None
        for p, grad in saved or ():
            p.grad = grad


def _embedding_like(named: list[tuple[str, nn.Parameter]]) -> str:
    names = [n for n, _ in named if "embed" in n.lower()] or [n for n, _ in named]
    return ", ".join(repr(n) for n in names[:5])


def _find_embedding(model: nn.Module, embedding: str | None) -> list[tuple[str, nn.Parameter]]:
    """The parameters an embedding attack perturbs: the input embedding matrix, or every parameter whose name
    contains `embedding`. A frozen one (LoRA, freeze_embeddings) is attacked too when it is an embedding table's
    weight (its gradient is taken at the table's output); any other frozen parameter is refused."""
    named = list(model.named_parameters())
    if embedding is None:
        owner = getattr(model, "backbone", None)
        owner = owner if callable(getattr(owner, "get_input_embeddings", None)) else model
        getter = getattr(owner, "get_input_embeddings", None)
        weight = getattr(getter(), "weight", None) if callable(getter) else None
        found = [(n, p) for n, p in named if p is weight]
        if not found:
            raise ValueError(
                f"embedding=None: {type(owner).__name__} has no get_input_embeddings() whose weight is a "
                f"parameter of the model; pass embedding='<part of its name>', e.g. one of {_embedding_like(named)}."
            )
    else:
        if not isinstance(embedding, str) or not embedding:
            raise ValueError(f"embedding must be None or a non-empty part of a parameter name, got embedding={embedding!r}.")
        found = [(n, p) for n, p in named if embedding in n]
        if not found:
            raise ValueError(
                f"embedding={embedding!r} matches no parameter name; embedding-like names: {_embedding_like(named)}. "
                "Pass part of one of them, or embedding=None to find the input embeddings automatically."
            )
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    other = [n for n, p in found if not p.requires_grad and id(p) not in tables]
    if other:
        raise ValueError(
            f"embedding: {', '.join(other)} is frozen (requires_grad=False) and no embedding table, so it never gets the "
            "gradient the attack follows; name an embedding table (embedding=None finds the input embeddings), or use AWP."
        )
    return found


class _EmbeddingAttack(_Adversary):
    """Shared by FGM and PGD: the embedding parameters, their backups, and the micro-step's gradient.

    With gradient accumulation ``.grad`` also holds the earlier micro-steps' gradients; their rows
    (other batches' tokens) would take part of the epsilon budget. A hook on each attacked parameter
    therefore keeps the gradient added since the adversary's last call, and the attack follows that:
    the gradient of this micro-step's loss. Nothing is copied, and nothing is kept while the adversary
    is not in use (e.g. before adversarial training starts). This relies on ``zero_grad(set_to_none=True)``
    (the default, and the kit's): a gradient zeroed in place looks like one still accumulating.

    A frozen table (LoRA freezes the embeddings) has no gradient of its own: a forward hook on the table
    makes its output take a gradient and keeps that gradient's rows (`_RowGrad`), summed per token as the
    table's own gradient would be; each new forward outside an attack starts them afresh.
    """

    def __init__(self, model: nn.Module, embedding: str | None):
        self.model = model
        self.params = _find_embedding(model, embedding)
        self._by_name = dict(self.params)
        self._saved: dict[str, _Original] = {}
        self._fresh: dict[str, torch.Tensor] = {}  # gradient added since the last attack, when .grad holds older ones
        self._rows: dict[str, _RowGrad] = {}  # a frozen table's gradient since its last forward
        self._armed = False  # in use since the gradients were last reset: worth recording
        ref = weakref.ref(self)  # the model's hooks must not keep the adversary alive
        tables = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Embedding)}
        self._hooks = [p.register_hook(lambda grad, name=name, ref=ref: _record(ref, name, grad))
                       if p.requires_grad else
                       tables[id(p)].register_forward_hook(lambda module, args, out, name=name, ref=ref: _watch(ref, name, args, out))
                       for name, p in self.params]

    def __del__(self):
        for hook in getattr(self, "_hooks", ()):
            hook.remove()

    def _gradient(self, name: str, param: nn.Parameter) -> torch.Tensor | _RowGrad | None:
        """This micro-step's gradient of `param` (see the class docstring)."""
        if not param.requires_grad:
            return self._rows.pop(name, None)
        fresh = self._fresh.pop(name, None)
        return param.grad if fresh is None else fresh

    def _usable(self):
        """(name, parameter, gradient, 1 / ||gradient||) of each embedding parameter whose gradient
        is usable (present, finite, non-zero)."""
        for name, p in self.params:
            grad = self._gradient(name, p)
            inv_norm = _inv_norm(grad)
            if inv_norm is not None:
                yield name, p, grad, inv_norm

    def restore(self) -> None:
        """Put the embedding weights back bit for bit."""
        super().restore()
        self._fresh.clear()  # the adversarial backward's gradient is not the next micro-step's
        self._rows.clear()
        self._armed = True


def _watch(ref: weakref.ref, name: str, args: tuple, output: torch.Tensor) -> None:
    """Forward hook of a frozen embedding table: make its output take a gradient, and keep that gradient's rows."""
    adversary = ref()
    if adversary is None or not torch.is_grad_enabled() or not args:
        return
    ids = args[0]
    if not output.requires_grad:
        output.requires_grad_(True)  # a frozen table's output is a leaf: backward now reaches it
    if not adversary._saved:  # a forward outside an attack: a new micro-step, whose gradient starts afresh
        adversary._rows.pop(name, None)
    output.register_hook(lambda grad: _collect(ref, name, ids, grad))


def _collect(ref: weakref.ref, name: str, ids: torch.Tensor, grad: torch.Tensor) -> None:
    adversary = ref()
    if adversary is None:
        return
    rows = _RowGrad.of(ids, grad.detach())
    earlier = adversary._rows.get(name)
    adversary._rows[name] = rows if earlier is None else earlier.plus(rows)


def _record(ref: weakref.ref, name: str, grad: torch.Tensor) -> None:
    """Gradient hook: keep what each backward adds to a parameter since the adversary's last call."""
    adversary = ref()
    if adversary is None:
        return
    if adversary._by_name[name].grad is None:  # gradients were reset: from now on .grad holds only new gradients
        adversary._fresh.pop(name, None)
        adversary._armed = False
    elif adversary._armed:
        earlier = adversary._fresh.get(name)
        adversary._fresh[name] = grad if earlier is None else earlier + grad


class FGM(_EmbeddingAttack):
    """Fast Gradient Method (Miyato et al., 2017): one step of size epsilon up the loss gradient on the
    word embeddings, r = epsilon · g / ||g||, with g the gradient of this micro-step's loss (also under
    gradient accumulation) - scaled or not by a GradScaler, since only its direction counts.

    Args:
        model: a `PairModel` (the embedding of ``model.backbone``) or a bare transformers encoder.
        epsilon: L2 norm of the perturbation of the embedding matrix. Default 1.0.
        embedding: None finds the input embedding matrix (``get_input_embeddings()``) for every
            backbone; a string perturbs every parameter whose name contains it (frozen: embedding tables only), each by
            epsilon along its own gradient (the common Kaggle routine with ``emb_name``).

    Example:
        >>> fgm = FGM(model, epsilon=1.0)
        >>> train_step(model, batch, ..., adversary=fgm)
        >>> # by hand: loss.backward(); fgm.attack(); adv_loss.backward(); fgm.restore()
    """

    def __init__(self, model: nn.Module, epsilon: float = 1.0, embedding: str | None = None):
        self.epsilon = _positive("epsilon", epsilon)
        super().__init__(model, embedding)

    @torch.no_grad()
    def attack(self) -> bool:
        """Add epsilon · g / ||g|| to each embedding parameter; False when no gradient was usable."""
        moved = False
        for name, p, grad, inv_norm in self._usable():
            saved, _ = self._keep(name, p, grad, by_rows=True)
            moved_part = saved.part(p)
            moved_part.add_(saved.part(grad), alpha=self.epsilon * inv_norm)
            saved.write(moved_part)
            moved = True
        return moved


class PGD(_EmbeddingAttack):
    """Projected Gradient Descent (Madry et al., 2018) on the word embeddings: `steps` steps of
    alpha · g / ||g||, the total perturbation projected onto the L2 ball of radius epsilon.

    Each step but the last backpropagates the adversarial loss alone, to find the next direction;
    the last adds its gradient to the normal one. That is `steps` extra forward/backward passes.

    Args:
        model: a `PairModel` or a bare transformers encoder.
        epsilon: radius of the L2 ball around the original embedding matrix. Default 1.0.
        alpha: L2 norm of each step. Default 0.3.
        steps: K, the number of attack steps (and extra forward/backward passes). Default 3.
        embedding: as in `FGM`.

    Example:
        >>> pgd = PGD(model, epsilon=1.0, alpha=0.3, steps=3)
    """

    def __init__(self, model: nn.Module, epsilon: float = 1.0, alpha: float = 0.3, steps: int = 3, embedding: str | None = None):
        self.epsilon = _positive("epsilon", epsilon)
        self.alpha = _positive("alpha", alpha)
        self.steps = _steps(steps)
        self._delta: dict[str, torch.Tensor] = {}
        super().__init__(model, embedding)

    @torch.no_grad()
    def attack(self) -> bool:
        """One step: add alpha · g / ||g||, then project the total perturbation onto the epsilon ball."""
        moved = False
        for name, p, grad, inv_norm in self._usable():
            saved, added = self._keep(name, p, grad, by_rows=True)
            step = self.alpha * inv_norm
            delta = self._delta.get(name)  # the total perturbation of the kept part, fp32
            if delta is None:
                delta = saved.part(grad).to(torch.float32, copy=True).mul_(step)
            else:
                if added:
                    delta = torch.cat([delta, delta.new_zeros((added, *delta.shape[1:]))])
                delta.add_(saved.part(grad), alpha=step)
            norm = _norm(delta).item()
            if norm > self.epsilon:
                delta.mul_(self.epsilon / norm)
            self._delta[name] = delta
            if saved.rows is None:
                p.copy_(saved.values).add_(delta)
            else:
                saved.write(saved.values + delta)
            moved = True
        return moved

    def restore(self) -> None:
        """Put the embedding weights back bit for bit."""
        self._delta.clear()
        super().restore()


class AWP(_Adversary):
    """Adversarial Weight Perturbation (Wu et al., 2020), as in the USPPPM winning solution: every
    trainable parameter whose name contains `params` moves by r = adv_lr · g / ||g|| · ||w|| (per
    parameter), each element kept within adv_eps · |w0| of its original value w0.

    Under gradient accumulation g is the ``.grad`` accumulated so far in the optimizer step (a
    per-micro-step gradient would hold one more copy of every weight's gradient); the per-element
    bound keeps each weight's budget its own, so other batches' rows take nothing from this batch.

    Args:
        model: any module; with a `PairModel` the head's weights are perturbed too.
        adv_lr: relative step size, in units of each parameter's norm. Default 1.0.
        adv_eps: per-element bound, relative to |w0|. Default 0.01.
        steps: attack steps; as in `PGD`, each is one extra forward/backward. Default 1.
        params: part of the parameter names to perturb. Default "weight" (biases stay).

    Example:
        >>> awp = AWP(model, adv_lr=1.0, adv_eps=0.01)
    """

    def __init__(self, model: nn.Module, adv_lr: float = 1.0, adv_eps: float = 0.01, steps: int = 1, params: str = "weight"):
        self.adv_lr = _positive("adv_lr", adv_lr)
        self.adv_eps = _positive("adv_eps", adv_eps)
        self.steps = _steps(steps)
        if not isinstance(params, str) or not params:
            raise ValueError(f"params must be a non-empty part of parameter names, got params={params!r}.")
        self.model = model
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and params in n]
        if not self.params:
            named = list(model.named_parameters())
            raise ValueError(f"params={params!r} matches no trainable parameter name; names look like "
                             f"{', '.join(repr(n) for n, _ in named[:4])}. Pass part of them (default 'weight').")
        self._saved: dict[str, _Original] = {}
        self._embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}

    @torch.no_grad()
    def attack(self) -> bool:
        """One step on every matched parameter with a finite, non-zero gradient; False when none had one."""
        pairs = [(n, p) for n, p in self.params if p.grad is not None]
        if not pairs:
            return False
        norms = torch.stack([torch.stack((_norm(p.grad), _norm(p))) for _, p in pairs]).tolist()  # (N, 2), one sync
        moved = False
        for (name, p), (grad_norm, weight_norm) in zip(pairs, norms):
            if not math.isfinite(grad_norm) or grad_norm == 0:
                continue
            saved, _ = self._keep(name, p, p.grad, by_rows=id(p) in self._embeddings)
            moved_part, origin = saved.part(p), saved.values
            bound = origin.abs().mul_(self.adv_eps)  # per element
            # in place, holding the total perturbation meanwhile: no weight-sized temporary but `bound`
            moved_part.sub_(origin).add_(saved.part(p.grad), alpha=self.adv_lr * (weight_norm + 1e-12) / (grad_norm + 1e-12))
            torch.minimum(moved_part, bound, out=moved_part)
            torch.maximum(moved_part, bound.neg_(), out=moved_part)
            saved.write(moved_part.add_(origin))
            moved = True
        return moved


ADVERSARIES: dict[str, type | None] = {"none": None, "fgm": FGM, "pgd": PGD, "awp": AWP}


def create_adversary(name: str | type | None, model: nn.Module, **options) -> _Adversary | None:
    """An adversary by name (see `ADVERSARIES`), or None for ``"none"``; a class passes straight through.

    Args:
        name: ``"none"``, ``"fgm"``, ``"pgd"``, ``"awp"`` (any case), None, or an adversary class.
        model: the model to attack.
        **options: the adversary's arguments (FGM: epsilon, embedding; PGD: epsilon, alpha, steps,
            embedding; AWP: adv_lr, adv_eps, steps, params). With ``"none"`` they are ignored, so a
            config keeps its adversary settings while adversarial training is off.

    Example:
        >>> adversary = create_adversary("fgm", model, epsilon=0.5)
        >>> train_step(model, batch, ..., adversary=adversary)
    """
    if isinstance(name, type):
        cls = name
    else:
        key = "none" if name is None else str(name).lower()
        if key not in ADVERSARIES:
            raise ValueError(f"adversary={name!r} is unknown; use one of {', '.join(map(repr, ADVERSARIES))}.")
        cls = ADVERSARIES[key]
        if cls is None:
            return None
    accepted = [p for p in inspect.signature(cls).parameters if p != "model"]
    for option in options:
        if option not in accepted:
            close = difflib.get_close_matches(option, accepted, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"adversary {cls.__name__} takes no option {option!r}; its options are {', '.join(accepted)}.{hint}")
    return cls(model, **options)
