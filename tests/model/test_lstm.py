"""The explicit gate-equation LSTM against torch.nn.LSTM with the same weights, in double precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.lstm import GATES, LSTM, LSTMCell

D, H, B, T = 5, 4, 3, 7
TOL = 1e-5


@pytest.fixture
def reference() -> nn.LSTM:
    torch.manual_seed(0)
    return nn.LSTM(D, H, num_layers=2, bidirectional=True, batch_first=True).double()


def explicit(reference: nn.LSTM, layer: int = 0, reverse: bool = False) -> LSTM:
    lstm = LSTM(reference.input_size if layer == 0 else 2 * H, H).double()
    lstm.cell.load_from_torch(reference, layer=layer, reverse=reverse)
    return lstm


def test_cell_follows_the_gate_equations_by_hand() -> None:
    # Zero weights: f = i = o = sigmoid(b), C~ = tanh(b_C); with b = 0, C = C_prev / 2 and h = tanh(C) / 2.
    cell = LSTMCell(2, 3).double()
    for p in cell.parameters():
        nn.init.zeros_(p)
    x, h_prev, c_prev = torch.ones(1, 2), torch.zeros(1, 3), torch.full((1, 3), 2.0)
    h, c = cell(x.double(), (h_prev.double(), c_prev.double()))
    assert torch.allclose(c, torch.full((1, 3), 1.0, dtype=torch.float64))
    assert torch.allclose(h, 0.5 * torch.tanh(c))
    # A large candidate bias with the input gate wide open and forget shut: C ~= tanh(10) ~= 1.
    with torch.no_grad():
        cell.bias["i"].fill_(50.0)
        cell.bias["f"].fill_(-50.0)
        cell.bias["C"].fill_(10.0)
        cell.bias["o"].fill_(50.0)
    h, c = cell(x.double(), (h_prev.double(), c_prev.double()))
    assert torch.allclose(c, torch.tanh(torch.tensor(10.0, dtype=torch.float64)).expand(1, 3))
    assert torch.allclose(h, torch.tanh(c))


def test_cell_has_one_matrix_per_gate_over_h_and_x() -> None:
    cell = LSTMCell(D, H)
    assert set(cell.weight) == set(GATES) == set(cell.bias)
    assert all(w.shape == (H, H + D) for w in cell.weight.values())
    assert all(b.shape == (H,) for b in cell.bias.values())


def test_one_step_from_a_nonzero_state_matches_torch() -> None:
    torch.manual_seed(1)
    one_layer = nn.LSTM(D, H, batch_first=True).double()
    cell = LSTMCell(D, H).double()
    cell.load_from_torch(one_layer)
    x, h0, c0 = torch.randn(B, D).double(), torch.randn(B, H).double(), torch.randn(B, H).double()
    _, (h_ref, c_ref) = one_layer(x[:, None], (h0[None], c0[None]))
    h, c = cell(x, (h0, c0))
    assert torch.allclose(h, h_ref[0], atol=TOL)
    assert torch.allclose(c, c_ref[0], atol=TOL)


def test_forward_matches_both_directions(reference: nn.LSTM) -> None:
    x = torch.randn(B, T, D, dtype=torch.float64)
    out_ref, (h_ref, c_ref) = reference(x)  # h_ref: (layers * 2, B, H), index = 2 * layer + direction
    layer0 = out_ref[..., :H], out_ref[..., H:]
    forward_out, (h_f, c_f) = explicit(reference)(x)
    backward_out, (h_b, c_b) = explicit(reference, reverse=True)(x, reverse=True)
    # Layer 0's outputs are layer 1's inputs, so compare layer 1 to see layer 0 was right too.
    layer0_out = torch.cat([forward_out, backward_out], dim=-1)
    top_f, (h1_f, c1_f) = explicit(reference, layer=1)(layer0_out)
    top_b, (h1_b, c1_b) = explicit(reference, layer=1, reverse=True)(layer0_out, reverse=True)
    assert torch.allclose(top_f, layer0[0], atol=TOL)
    assert torch.allclose(top_b, layer0[1], atol=TOL)
    for got, want in zip((h_f, h_b, h1_f, h1_b), h_ref, strict=True):
        assert torch.allclose(got, want, atol=TOL)
    for got, want in zip((c_f, c_b, c1_f, c1_b), c_ref, strict=True):
        assert torch.allclose(got, want, atol=TOL)


def test_gradients_match_for_inputs_and_parameters() -> None:
    torch.manual_seed(2)
    reference = nn.LSTM(D, H, bidirectional=True, batch_first=True).double()
    forward, backward = explicit(reference), explicit(reference, reverse=True)
    x_ref = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    x = x_ref.detach().clone().requires_grad_(True)
    weights = torch.randn(B, T, 2 * H, dtype=torch.float64)  # a loss that touches every output
    final = torch.randn(2, B, H, dtype=torch.float64)

    out_ref, (h_ref, c_ref) = reference(x_ref)
    ((out_ref * weights).sum() + (h_ref * final).sum() + (c_ref * final).sum()).backward()
    out_f, (h_f, c_f) = forward(x)
    out_b, (h_b, c_b) = backward(x, reverse=True)
    out = torch.cat([out_f, out_b], dim=-1)
    h, c = torch.stack([h_f, h_b]), torch.stack([c_f, c_b])
    ((out * weights).sum() + (h * final).sum() + (c * final).sum()).backward()

    assert x.grad is not None and x_ref.grad is not None
    assert torch.allclose(x.grad, x_ref.grad, atol=TOL)
    for lstm, suffix in ((forward, "_l0"), (backward, "_l0_reverse")):
        w_ih, w_hh, b_ih, b_hh = (
            getattr(reference, name + suffix).grad.chunk(4)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        for k, gate in enumerate(GATES):
            grad_w, grad_b = lstm.cell.weight[gate].grad, lstm.cell.bias[gate].grad
            # W = [W_hh | W_ih] and b = b_ih + b_hh, so b's gradient is each bias's gradient.
            assert torch.allclose(grad_w[:, :H], w_hh[k], atol=TOL), (suffix, gate)
            assert torch.allclose(grad_w[:, H:], w_ih[k], atol=TOL), (suffix, gate)
            assert torch.allclose(grad_b, b_ih[k], atol=TOL), (suffix, gate)
            assert torch.allclose(grad_b, b_hh[k], atol=TOL), (suffix, gate)


def test_output_shapes() -> None:
    out, (h, c) = LSTM(D, H)(torch.randn(B, T, D))
    assert out.shape == (B, T, H)
    assert h.shape == c.shape == (B, H)
    assert torch.equal(out[:, -1], h)
