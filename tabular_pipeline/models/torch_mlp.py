"""A torch MLP as a scikit-learn classifier and regressor, on the same rails as sklearn models.

It consumes the featurizer's output (a dense float matrix). Columns with more
than two distinct training values are "numeric" and may go through periodic
numeric embeddings (PLR: Periodic -> Linear -> ReLU, Gorishniy et al. 2022);
binary columns (one-hot categories, flags) enter the MLP as they are.

Why it is built this way:

- Deterministic: a seeded, forked RNG, ``torch.use_deterministic_algorithms``,
  a fixed thread count and a dedicated shuffle generator, so two runs give the
  same weights bit for bit.
- Picklable without torch objects: the fitted network is kept as numpy arrays
  (``state_dict_``) plus its shape (``layout_``) and rebuilt on first use, so
  the pickle holds no torch class and is byte-stable.
- Early stopping on an explicit validation split (``fit(X, y, eval_set=...)``)
  with the best weights restored; ``history_`` has one row per epoch.
- Distributed: when ``torch.distributed`` is initialised with more than one
  process, training runs under DDP; rank 0 decides early stopping and
  broadcasts it (see ``tabular_pipeline.models.distributed``).
- Regression (``TorchMLPRegressor``) shares all of this; only the head (one
  output), the loss (MSE or Huber) and the validation metrics differ. The
  target is standardised with the training mean and standard deviation and
  predictions are transformed back inside the estimator, so the loss scale
  and learning rate do not depend on the target's units.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

log = logging.getLogger(__name__)

MONITORS = ("log_loss", "accuracy")
REGRESSION_MONITORS = ("rmse", "mae")
LOSSES = ("mse", "huber")
EMBEDDINGS = (None, "plr")


@contextmanager
def torch_settings(num_threads: int, deterministic: bool = True) -> Iterator[None]:
    """Fixed threads and deterministic kernels for the block, restored afterwards."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, int(num_threads)))
    torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def build_network(layout: dict[str, Any]) -> Any:
    """The network for ``layout`` (plain dict, so it pickles without torch)."""
    import torch
    from torch import nn

    class PeriodicEmbedding(nn.Module):
        """PLR: x -> [cos(2 pi c x), sin(2 pi c x)] -> per-feature Linear -> ReLU."""

        def __init__(self, n_features: int, n_freq: int, scale: float, d_out: int) -> None:
            super().__init__()
            self.frequencies = nn.Parameter(torch.randn(n_features, n_freq) * scale)
            bound = 1 / math.sqrt(2 * n_freq)
            self.weight = nn.Parameter(
                torch.empty(n_features, 2 * n_freq, d_out).uniform_(-bound, bound)
            )
            self.bias = nn.Parameter(torch.empty(n_features, d_out).uniform_(-bound, bound))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = 2 * math.pi * self.frequencies[None] * x[..., None]
            z = torch.cat([torch.cos(z), torch.sin(z)], dim=-1)
            z = torch.einsum("bnk,nkd->bnd", z, self.weight) + self.bias
            return torch.relu(z).flatten(1)

    class MLP(nn.Module):
        def __init__(self, layout: dict[str, Any]) -> None:
            super().__init__()
            self.embedded = list(layout["embedded"])
            self.plain = list(layout["plain"])
            width = len(self.plain)
            self.embedding: nn.Module | None = None
            if self.embedded:
                self.embedding = PeriodicEmbedding(
                    len(self.embedded),
                    layout["n_frequencies"],
                    layout["frequency_scale"],
                    layout["d_embedding"],
                )
                width += len(self.embedded) * layout["d_embedding"]
            layers: list[nn.Module] = []
            for size in layout["hidden_sizes"]:
                layers.append(nn.Linear(width, size))
                if layout["batch_norm"]:
                    layers.append(nn.BatchNorm1d(size))
                layers.append(nn.ReLU())
                if layout["dropout"] > 0:
                    layers.append(nn.Dropout(layout["dropout"]))
                width = size
            layers.append(nn.Linear(width, layout["n_classes"]))
            self.body = nn.Sequential(*layers)
            self.embedded_idx: torch.Tensor
            self.plain_idx: torch.Tensor
            self.register_buffer("embedded_idx", torch.tensor(self.embedded, dtype=torch.long))
            self.register_buffer("plain_idx", torch.tensor(self.plain, dtype=torch.long))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = []
            if self.embedding is not None:
                parts.append(self.embedding(x.index_select(1, self.embedded_idx)))
            if self.plain:
                parts.append(x.index_select(1, self.plain_idx))
            return self.body(torch.cat(parts, dim=1))

    return MLP(layout)


def _log_loss(logits: Any, target: Any) -> float:
    import torch.nn.functional as F

    return float(F.cross_entropy(logits, target).item())


class _TorchMLP(BaseEstimator):
    """What the classifier and the regressor share: network, training loop, pickling.

    Subclasses define the targets (``_fit_targets``), the loss, the
    validation metrics (``_validate``) and the epoch log line.
    """

    supports_ddp = True  # trains under torchrun; see tabular_pipeline.models.distributed

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (256, 256),
        dropout: float = 0.1,
        batch_norm: bool = True,
        numeric_embedding: str | None = "plr",
        n_frequencies: int = 48,
        frequency_scale: float = 0.1,
        d_embedding: int = 16,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 10,
        monitor: str = "log_loss",
        validation_fraction: float = 0.1,
        num_threads: int = 1,
        random_state: int = 0,
        verbose: bool = True,
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.numeric_embedding = numeric_embedding
        self.n_frequencies = n_frequencies
        self.frequency_scale = frequency_scale
        self.d_embedding = d_embedding
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.monitor = monitor
        self.validation_fraction = validation_fraction
        self.num_threads = num_threads
        self.random_state = random_state
        self.verbose = verbose

    # -- pickling: numpy weights only, network rebuilt lazily ------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_network", None)
        return state

    def _check_params(self) -> None:
        if self.numeric_embedding not in EMBEDDINGS:
            raise ValueError(
                f"numeric_embedding must be one of {EMBEDDINGS}, got {self.numeric_embedding!r}"
            )
        if int(self.batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")

    def _encode(self, y: Any) -> np.ndarray:
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise ValueError(f"labels not seen in training: {sorted(set(y[unknown]))[:5]}")
        return idx.astype(np.int64)

    def fit(self, X: Any, y: Any, eval_set: tuple[Any, Any] | None = None) -> Any:
        """Fit; early stopping on ``eval_set`` or, without one, on a seeded holdout."""
        import torch

        self._check_params()
        X = np.asarray(X, dtype=np.float32)
        target = self._fit_targets(np.asarray(y))
        if eval_set is None:
            rng = np.random.default_rng(self.random_state)
            order = rng.permutation(len(X))
            n_valid = max(1, round(len(X) * self.validation_fraction))
            valid_idx, train_idx = np.sort(order[:n_valid]), np.sort(order[n_valid:])
            X_valid, y_valid = X[valid_idx], target[valid_idx]
            X, target = X[train_idx], target[train_idx]
        else:
            X_valid = np.asarray(eval_set[0], dtype=np.float32)
            y_valid = self._targets(np.asarray(eval_set[1]))
        self.n_features_in_ = X.shape[1]
        n_distinct = [len(np.unique(X[:, j][~np.isnan(X[:, j])])) for j in range(X.shape[1])]
        numeric = [j for j, n in enumerate(n_distinct) if n > 2]
        embedded = numeric if self.numeric_embedding == "plr" else []
        self.layout_ = {
            "embedded": embedded,
            "plain": [j for j in range(X.shape[1]) if j not in set(embedded)],
            "n_frequencies": int(self.n_frequencies),
            "frequency_scale": float(self.frequency_scale),
            "d_embedding": int(self.d_embedding),
            "hidden_sizes": [int(h) for h in self.hidden_sizes],
            "batch_norm": bool(self.batch_norm),
            "dropout": float(self.dropout),
            "n_classes": self._n_outputs(),
        }
        with torch_settings(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            network = self._train(
                torch.from_numpy(X),
                torch.from_numpy(target),
                torch.from_numpy(X_valid),
                torch.from_numpy(y_valid),
            )
        self.state_dict_ = {
            k: v.detach().cpu().numpy().copy() for k, v in network.state_dict().items()
        }
        self._network = network
        return self

    def _train(self, X: Any, y: Any, X_valid: Any, y_valid: Any) -> Any:
        import torch

        from tabular_pipeline.models import distributed

        world, rank = distributed.world_size(), distributed.rank()
        network = build_network(self.layout_)
        model: Any = network
        if world > 1:
            model = torch.nn.parallel.DistributedDataParallel(network)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay)
        )
        shuffle = torch.Generator().manual_seed(int(self.random_state))
        per_rank_batch = max(2, int(self.batch_size) // world)
        sign = -1.0 if self.monitor == "accuracy" else 1.0  # the others: lower is better
        best_score, best_epoch, best_state = math.inf, 0, None
        self.history_: list[dict[str, float]] = []
        progress = _progress_factory()
        for epoch in range(1, int(self.max_epochs) + 1):
            started = time.perf_counter()
            model.train()
            # Same permutation on every rank (same generator), each takes its shard.
            order = torch.randperm(len(X), generator=shuffle)
            shard = order[: len(order) // world * world][rank::world]
            batches = list(torch.split(shard, per_rank_batch))
            if len(batches) > 1 and len(batches[-1]) < 2:
                batches = batches[:-1]  # batch norm cannot train on a single row
            loss_sum = torch.zeros(2, dtype=torch.float64)
            for idx in progress(batches, f"epoch {epoch}"):
                optimizer.zero_grad(set_to_none=True)
                loss = self._loss(model(X[idx]), y[idx])
                loss.backward()
                optimizer.step()
                loss_sum += torch.tensor([loss.item() * len(idx), len(idx)], dtype=torch.float64)
            distributed.all_reduce_sum(loss_sum)
            row = {"epoch": float(epoch), "train_loss": float(loss_sum[0] / loss_sum[1])}
            stop = torch.zeros(1)
            if rank == 0:
                row |= self._validate(network, X_valid, y_valid)
                score = sign * row[f"valid_{self.monitor}"]
                if score < best_score:
                    best_score, best_epoch = score, epoch
                    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                stop[0] = float(epoch - best_epoch >= int(self.patience))
            distributed.broadcast(stop)
            self.history_.append(row)
            if self.verbose and rank == 0:
                log.info(
                    "epoch %d/%d: train loss %.4f, %s (best epoch %d) %.2fs",
                    epoch,
                    self.max_epochs,
                    row["train_loss"],
                    ", ".join(
                        f"{k.replace('_', ' ')} {v:.4f}"
                        for k, v in row.items()
                        if k.startswith("valid")
                    ),
                    best_epoch,
                    time.perf_counter() - started,
                )
            if stop.item():
                break
        self.best_epoch_ = best_epoch
        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()
        return network

    @staticmethod
    def _outputs(network: Any, X: Any) -> Any:
        import torch

        network.eval()
        with torch.no_grad():
            return torch.cat([network(part) for part in torch.split(X, 8192)])

    # -- per-task hooks ----------------------------------------------------------------------
    def _fit_targets(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _targets(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _loss(self, out: Any, y: Any) -> Any:
        raise NotImplementedError

    def _validate(self, network: Any, X_valid: Any, y_valid: Any) -> dict[str, float]:
        raise NotImplementedError

    # -- inference ---------------------------------------------------------------------------
    def _get_network(self) -> Any:
        network = getattr(self, "_network", None)
        if network is None:
            import torch
            from sklearn.exceptions import NotFittedError

            if not hasattr(self, "state_dict_"):
                raise NotFittedError(f"{type(self).__name__} is not fitted yet")
            with torch.random.fork_rng(devices=[]):  # init draws are overwritten anyway
                network = build_network(self.layout_)
            network.load_state_dict({k: torch.from_numpy(v) for k, v in self.state_dict_.items()})
            network.eval()
            self._network = network
        return network

    def _forward(self, X: Any) -> Any:
        """Raw network outputs (float64) for a feature matrix, in chunks."""
        import torch

        network = self._get_network()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got shape {X.shape}")
        with torch_settings(self.num_threads), torch.no_grad():
            parts = [network(part).double() for part in torch.split(torch.from_numpy(X), 8192)]
        return torch.cat(parts)


class TorchMLPClassifier(ClassifierMixin, _TorchMLP):
    """MLP classifier (optionally with PLR numeric embeddings) with the sklearn API."""

    def _check_params(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {self.monitor!r}")
        super()._check_params()

    def _fit_targets(self, y: np.ndarray) -> np.ndarray:
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("need at least two classes to fit a classifier")
        return self._encode(y)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        return self._encode(y)

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _loss(self, out: Any, y: Any) -> Any:
        import torch

        return torch.nn.functional.cross_entropy(out, y)

    def _validate(self, network: Any, X_valid: Any, y_valid: Any) -> dict[str, float]:
        logits = self._outputs(network, X_valid)
        accuracy = float((logits.argmax(1) == y_valid).double().mean().item())
        return {"valid_log_loss": _log_loss(logits, y_valid), "valid_accuracy": accuracy}

    def predict_proba(self, X: Any) -> np.ndarray:
        import torch

        return torch.softmax(self._forward(X), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class TorchMLPRegressor(RegressorMixin, _TorchMLP):
    """MLP regressor: one output on the standardised target, MSE or Huber loss.

    ``monitor`` (early stopping) is ``rmse`` or ``mae`` of the validation
    split in the target's own units; ``predict`` returns target units.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (256, 256),
        dropout: float = 0.1,
        batch_norm: bool = True,
        numeric_embedding: str | None = "plr",
        n_frequencies: int = 48,
        frequency_scale: float = 0.1,
        d_embedding: int = 16,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 10,
        monitor: str = "rmse",
        loss: str = "mse",
        validation_fraction: float = 0.1,
        num_threads: int = 1,
        random_state: int = 0,
        verbose: bool = True,
    ) -> None:
        super().__init__(
            hidden_sizes=hidden_sizes,
            dropout=dropout,
            batch_norm=batch_norm,
            numeric_embedding=numeric_embedding,
            n_frequencies=n_frequencies,
            frequency_scale=frequency_scale,
            d_embedding=d_embedding,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            monitor=monitor,
            validation_fraction=validation_fraction,
            num_threads=num_threads,
            random_state=random_state,
            verbose=verbose,
        )
        self.loss = loss

    def _check_params(self) -> None:
        if self.monitor not in REGRESSION_MONITORS:
            raise ValueError(f"monitor must be one of {REGRESSION_MONITORS}, got {self.monitor!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        super()._check_params()

    def _fit_targets(self, y: np.ndarray) -> np.ndarray:
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError("the regression target has NaN or infinite values")
        self.target_mean_ = float(y.mean())
        std = float(y.std())
        self.target_scale_ = std if std > 0 else 1.0
        return self._targets(y)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(y, dtype=np.float64) - self.target_mean_) / self.target_scale_
        return scaled.astype(np.float32)

    def _n_outputs(self) -> int:
        return 1

    def _loss(self, out: Any, y: Any) -> Any:
        import torch.nn.functional as F

        pred = out[:, 0]
        return F.huber_loss(pred, y) if self.loss == "huber" else F.mse_loss(pred, y)

    def _validate(self, network: Any, X_valid: Any, y_valid: Any) -> dict[str, float]:
        err = (self._outputs(network, X_valid)[:, 0].double() - y_valid.double()) * float(
            self.target_scale_
        )
        return {
            "valid_rmse": float(err.pow(2).mean().sqrt().item()),
            "valid_mae": float(err.abs().mean().item()),
        }

    def predict(self, X: Any) -> np.ndarray:
        out = self._forward(X)[:, 0].numpy()
        return out * self.target_scale_ + self.target_mean_


def _progress_factory() -> Callable[[list[Any], str], Any]:
    """A tqdm bar over batches on a terminal; the plain list otherwise (logs stay clean)."""
    if not sys.stderr.isatty():
        return lambda items, desc: items
    from tqdm import tqdm

    return lambda items, desc: tqdm(items, desc=desc, leave=False, file=sys.stderr)
