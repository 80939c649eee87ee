"""FoldState: the state dict round-trips every counter, list, component and random generator; the
module-level evaluate equals the metric computed by hand; a fold's rows (kagglekit.data.rows)."""

import random

import numpy as np
import pandas as pd
import pytest
import torch

from kagglekit.config import Config
from kagglekit.data.rows import fold_rows
from kagglekit.train.components import Components
from kagglekit.train.ema import EMA
from kagglekit.train.fold_state import FoldState


def _parts(seed: int) -> Components:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    return Components(model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False), ema=EMA(model, decay=0.5))


def _train(parts: Components, steps: int) -> None:
    data = torch.Generator().manual_seed(steps)  # the same batch for both runs: global generators untouched
    x, y = torch.randn(8, 4, generator=data), torch.randn(8, 1, generator=data)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(parts.model(x), y)
        loss.backward()
        parts.optimizer.step()
        parts.optimizer.zero_grad()
        parts.scheduler.step()
        parts.ema.update(parts.model)


def _draws(state: FoldState) -> tuple:
    """The next numbers of every generator a fold draws from."""
    return (state.rng.integers(0, 1 << 30, 4).tolist(), random.random(), np.random.rand(), torch.rand(3).tolist())


def _filled_state(batch: int) -> FoldState:
    state = FoldState(_parts(0), rng=np.random.default_rng(5))
    _train(state.parts, 3)
    state.rng.permutation(10)  # epoch 0's batch order
    if batch:
        from kagglekit.train.state import generator_state

        state.epoch_rng = generator_state(state.rng)  # the start of the epoch in progress
        state.rng.permutation(10)
    state.step, state.epoch, state.batch, state.stale, state.nonfinite = 7, 2, batch, 1, 2
    state.best_score, state.best_epoch, state.best_step = 0.625, 2, 5
    state.best_preds = np.array([0.1, 0.2, 0.3])
    state.history = [{"epoch": 1, "step": 3, "train_loss": 0.5, "score": 0.5, "improved": True}]
    state.log = [{"step": s, "epoch": s / 4, "loss": 1.0 / s, "lr": 0.1, "score": float("nan")} for s in range(1, 8)]
    state.since_eval = [0.25, 0.5]
    return state


@pytest.mark.parametrize("batch", [0, 3])
def test_load_state_dict_restores_every_counter_component_and_generator(tmp_path, batch):
    state = _filled_state(batch)
    path = state.save(tmp_path / "resume" / "fold0.pt")  # through the file: weights_only loading must read it all
    expected_draws = _draws(state)
    if batch:  # mid-epoch the batch-order generator goes back to the epoch's start
        from kagglekit.train.state import set_generator_state

        rewound = np.random.default_rng(0)
        set_generator_state(rewound, state.epoch_rng)
        expected_draws = (rewound.integers(0, 1 << 30, 4).tolist(), *expected_draws[1:])

    fresh = FoldState(_parts(1), rng=np.random.default_rng(99))
    random.seed(123), np.random.seed(123), torch.manual_seed(123)  # the generators move on after the save
    fresh.load(path)

    for name in ("step", "epoch", "batch", "stale", "nonfinite", "best_score", "best_epoch", "best_step", "history", "since_eval"):
        assert getattr(fresh, name) == getattr(state, name), name
    assert (fresh.step, fresh.epoch, fresh.batch, fresh.stale, fresh.nonfinite) == (7, 2, batch, 1, 2)
    pd.testing.assert_frame_equal(pd.DataFrame(fresh.log), pd.DataFrame(state.log))
    np.testing.assert_array_equal(fresh.best_preds, state.best_preds)
    for mine, theirs in ((fresh.parts.model.state_dict(), state.parts.model.state_dict()),
                         (fresh.parts.ema.state_dict()["shadow"], state.parts.ema.state_dict()["shadow"])):
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert fresh.parts.ema.state_dict()["num_updates"] == 3
    assert fresh.parts.scheduler.last_epoch == 3 and fresh.parts.scheduler.get_last_lr() == state.parts.scheduler.get_last_lr()
    a, b = fresh.parts.optimizer.state_dict()["state"], state.parts.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)
    assert _draws(fresh) == expected_draws

    # and the restored run steps exactly as the original does
    _train(state.parts, 2), _train(fresh.parts, 2)
    assert all(torch.equal(p, q) for p, q in zip(fresh.parts.model.parameters(), state.parts.model.parameters()))


def test_state_dict_is_a_copy_of_the_lists_on_load():
    state = _filled_state(0)
    saved = state.state_dict()
    fresh = FoldState(_parts(1), rng=np.random.default_rng(0))
    fresh.load_state_dict(saved)
    fresh.history.append({"epoch": 2})
    fresh.since_eval.clear()
    assert len(state.history) == 1 and state.since_eval == [0.25, 0.5]


def test_a_file_without_the_newer_keys_loads_with_their_defaults():
    """Pretraining files of earlier versions held only model, optimizer, scheduler, scaler, step, log, rng."""
    state = _filled_state(0)
    full = state.state_dict()
    old = {k: full[k] for k in ("model", "optimizer", "scheduler", "scaler", "ema", "step", "log", "rng")}
    fresh = FoldState(_parts(1))
    fresh.load_state_dict(old)
    assert (fresh.step, fresh.epoch, fresh.batch, fresh.stale, fresh.nonfinite) == (7, 0, 0, 0, 0)
    assert fresh.best_score is None and fresh.best_preds is None and fresh.history == [] and len(fresh.log) == 7


def test_count_loss_counts_non_finite_losses_in_a_row():
    state = FoldState(_parts(0))
    counts = [state.count_loss(v) for v in (1.0, float("nan"), float("inf"), float("-inf"), 0.5, float("nan"))]
    assert counts == [0, 1, 2, 3, 0, 1]


def test_record_step_and_evaluation_keep_the_books():
    state = FoldState(_parts(0))
    for step, loss in enumerate((0.5, 0.25, 0.75), start=1):
        state.step = step
        state.record_step(loss, step / 3, lr=0.1 * step)
    assert state.progress() == {"loss": "0.5000", "lr": "3.00e-01", "score": "-", "best": "-"}
    train_loss = state.record_evaluation(0.8, improved=False)
    assert train_loss == pytest.approx(0.5) and state.since_eval == [] and state.stale == 1
    assert state.history == [{"epoch": 1, "step": 3, "train_loss": train_loss, "score": 0.8, "improved": False}]
    assert [row["score"] for row in state.log][:2] == pytest.approx([float("nan")] * 2, nan_ok=True) and state.log[-1]["score"] == 0.8
    assert np.isnan(state.record_evaluation(0.9, improved=True)) and state.stale == 0  # no step since: NaN loss


def test_evaluate_equals_the_metric_by_hand(tiny_bert):
    from scipy.stats import pearsonr

    from kagglekit.data.batching import PairEncodings
    from kagglekit.metrics import get_metric
    from kagglekit.models.pair_model import build_model
    from kagglekit.train.loop import evaluate

    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_bert, head="mean")
    model.eval()
    a = ["alpha beta gamma", "one", "a much longer text with many words in it", "delta", "x y"]
    b = ["beta", "two three", "short", "epsilon zeta eta theta", "z"]
    labels = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    enc = PairEncodings(tokenizer, a, b, 32, labels)
    rows = PairEncodings(tokenizer, a, b, 32)  # the same ids, no labels in the batches
    score, preds = evaluate(model, enc, labels, get_metric("pearson"), batch_size=2, device=torch.device("cpu"),
                            activation="sigmoid")
    with torch.no_grad():  # one unpadded row at a time, in the file's order
        by_hand = np.array([torch.sigmoid(model(**rows.collate([i]))).item() for i in range(len(a))])
    np.testing.assert_allclose(preds, by_hand, rtol=0, atol=1e-6)
    assert score == pytest.approx(pearsonr(labels, by_hand)[0], abs=1e-9)
    rmse, _ = evaluate(model, enc, labels, get_metric("rmse"), batch_size=4, device=torch.device("cpu"), activation="sigmoid")
    assert rmse == pytest.approx(float(np.sqrt(np.mean((by_hand - labels) ** 2))), abs=1e-6)


# --- kagglekit.data.rows ---


def _frame() -> pd.DataFrame:
    texts = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("e", "f"), ("f", "g")]
    return pd.DataFrame({"id": [f"r{i}" for i in range(6)], "text_a": [t[0] for t in texts], "text_b": [t[1] for t in texts],
                         "label": [0.0, 1.0, 0.5, 1.0, 0.0, 0.5], "group": list("aabbcc"), "fold": [0, 1, 0, 1, 0, 1]})


def test_fold_rows_split_and_extra_rows_stay_off_validation(capsys):
    frame = _frame()
    extra = pd.DataFrame({"id": ["x0", "x1", "x2"], "text_a": ["b", "q", "w"], "text_b": ["a", "r", "e"],
                          "label": [1.0, 0.0, 0.25], "group": ["x", "y", "z"]})  # x0 swaps validation pair r0 (a, b)
    train, valid, added = fold_rows(frame, 0, Config(n_folds=2, extra_weight=0.5), extra=extra)
    assert valid["id"].tolist() == ["r0", "r2", "r4"] and list(valid.index) == [0, 1, 2]
    assert train["id"].tolist() == ["r1", "r3", "r5", "x1", "x2"]
    assert train["weight"].tolist() == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert added == {"extra_rows": 2, "extra_left_out": 1}
    assert "1 extra row(s) repeat a validation pair" in capsys.readouterr().out
    train, valid, added = fold_rows(frame, 1, Config(n_folds=2, swap=True))
    assert added == {"swapped": 3} and len(train) == 6 and "weight" not in train and set(valid["fold"]) == {1}
    assert set(zip(train["text_a"], train["text_b"])) >= {("b", "a"), ("d", "c"), ("f", "e")}
    with pytest.raises(ValueError, match=r"fold 2 has no rows: n_folds=2 folds were made, use --fold 0..1"):
        fold_rows(frame, 2, Config(n_folds=2))
