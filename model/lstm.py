"""The LSTM of the classic gate equations, written out step by step.

This is the reference implementation: it documents exactly what the classifier computes and is tested
against ``torch.nn.LSTM``. The classifier itself runs the fused ``nn.LSTM`` (cuDNN on GPU), which is
the same function, much faster.

    f_t  = sigmoid(W_f . [h_{t-1}, x_t] + b_f)      forget gate
    i_t  = sigmoid(W_i . [h_{t-1}, x_t] + b_i)      input gate
    C~_t = tanh(W_C . [h_{t-1}, x_t] + b_C)         candidate cell
    C_t  = f_t * C_{t-1} + i_t * C~_t               new cell state
    o_t  = sigmoid(W_o . [h_{t-1}, x_t] + b_o)      output gate
    h_t  = o_t * tanh(C_t)                          new hidden state
"""

from __future__ import annotations

import torch
from torch import nn

GATES = ("i", "f", "C", "o")  # the order torch.nn.LSTM stacks its gate weights in


class LSTMCell(nn.Module):
    """One step of the gate equations, one weight matrix per gate over [h_{t-1}, x_t]."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        concat = hidden_size + input_size
        self.weight = nn.ParameterDict({g: nn.Parameter(torch.empty(hidden_size, concat)) for g in GATES})
        self.bias = nn.ParameterDict({g: nn.Parameter(torch.empty(hidden_size)) for g in GATES})
        bound = hidden_size**-0.5  # nn.LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h_prev, c_prev = state  # (B, H), (B, H)
        hx = torch.cat([h_prev, x], dim=-1)  # (B, H + D) = [h_{t-1}, x_t]
        w, b = self.weight, self.bias
        f = torch.sigmoid(hx @ w["f"].T + b["f"])
        i = torch.sigmoid(hx @ w["i"].T + b["i"])
        c_tilde = torch.tanh(hx @ w["C"].T + b["C"])
        c = f * c_prev + i * c_tilde
        o = torch.sigmoid(hx @ w["o"].T + b["o"])
        h = o * torch.tanh(c)
        return h, c

    @torch.no_grad()
    def load_from_torch(self, lstm: nn.LSTM, layer: int = 0, reverse: bool = False) -> None:
        """Copy one direction of one layer of an ``nn.LSTM`` into the per-gate matrices.

        ``nn.LSTM`` computes ``W_ih x + b_ih + W_hh h + b_hh`` with the gates stacked as (i, f, g, o);
        that is the same affine map as ``W . [h, x] + b`` with ``W = [W_hh | W_ih]``, ``b = b_ih + b_hh``.
        """
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        w_ih = getattr(lstm, "weight_ih" + suffix).chunk(4)
        w_hh = getattr(lstm, "weight_hh" + suffix).chunk(4)
        b_ih = getattr(lstm, "bias_ih" + suffix).chunk(4)
        b_hh = getattr(lstm, "bias_hh" + suffix).chunk(4)
        for k, gate in enumerate(GATES):
            self.weight[gate].copy_(torch.cat([w_hh[k], w_ih[k]], dim=1))
            self.bias[gate].copy_(b_ih[k] + b_hh[k])


class LSTM(nn.Module):
    """A single-layer, one-direction LSTM over a (B, T, D) batch, one cell step per time step."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.cell = LSTMCell(input_size, hidden_size)

    def forward(
        self, x: torch.Tensor, reverse: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, steps, _ = x.shape
        h = x.new_zeros(batch, self.cell.hidden_size)
        c = x.new_zeros(batch, self.cell.hidden_size)
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        outputs: list[torch.Tensor] = [x.new_empty(0)] * steps
        for t in order:
            h, c = self.cell(x[:, t], (h, c))
            outputs[t] = h
        return torch.stack(outputs, dim=1), (h, c)  # (B, T, H), final (B, H) each
