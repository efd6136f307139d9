"""Small models and training loops that several lessons share.

Lessons import these rather than copying them; each is short enough to read in place
(``lstmkit.training.train_recall??`` in a notebook shows the source).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit import data

__all__ = ["LastStepClassifier", "accuracy", "train_recall", "set_forget_bias"]


class LastStepClassifier(nn.Module):
    """A recurrent layer read at its last step, then a linear layer to class scores.

    recurrent_layer: a batch_first RNN/LSTM (lstmkit.nn or torch.nn) with hidden_size units.
    forward(x: (N, T, I)) -> (N, n_classes) scores.
    """

    def __init__(self, recurrent_layer: nn.Module, hidden_size: int, n_classes: int) -> None:
        super().__init__()
        self.rnn = recurrent_layer
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)          # out: (N, T, H), the hidden state at every step
        return self.head(out[:, -1])  # class scores from the last step: (N, n_classes)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of x whose highest score is the label y (no gradients)."""
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train_recall(model: nn.Module, lag: int, *, max_steps: int = 600, batch: int = 64, lr: float = 1e-3,
                 seed: int = 0) -> tuple[float, int]:
    """Adam on fresh batches of ``data.recall_task``; stop once held-out accuracy reaches 0.99.

    Returns (held-out accuracy on 500 sequences, number of steps taken).
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_test, y_test = map(torch.from_numpy, data.recall_task(500, lag, seed=10_000))
    for step in range(1, max_steps + 1):
        x, y = map(torch.from_numpy, data.recall_task(batch, lag, seed=seed * max_steps + step))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 and accuracy(model, x_test, y_test) >= 0.99:
            break
    return accuracy(model, x_test, y_test), step


def set_forget_bias(lstm_layer: nn.LSTM, value: float) -> nn.LSTM:
    """Set the forget-gate bias of every layer and direction to ``value``.

    Gate order is i, f, g, o, so the forget gate is the slice [H:2H] of both bias vectors; the
    two add, so one holds the value and the other is zeroed.
    """
    if not isinstance(lstm_layer, (nn.LSTM, nn.LSTMCell)):
        raise TypeError(f"lstm_layer must be an LSTM or LSTMCell (torch.nn or lstmkit.nn), "
                        f"got {type(lstm_layer).__name__}")
    if not lstm_layer.bias:
        raise ValueError("this LSTM has no biases (bias=False): there is no forget bias to set")
    H = lstm_layer.hidden_size
    with torch.no_grad():
        for name, p in lstm_layer.named_parameters():
            if name.startswith("bias_ih"):
                p[H:2 * H].fill_(value)
            elif name.startswith("bias_hh"):
                p[H:2 * H].zero_()
    return lstm_layer
