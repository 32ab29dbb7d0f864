"""Embedding -> bidirectional LSTM over packed sequences -> pooling -> linear head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.config import ModelConfig


class SentimentClassifier(nn.Module):
    """Text classifier; ``forward(ids, lengths)`` returns unnormalised logits (B, num_labels)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, config.pad_id)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            bidirectional=config.bidirectional,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        pooled = config.encoder_size * (2 if config.pooling == "max_mean" else 1)
        self.head_dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(pooled, config.num_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) of token ids, right-padded; lengths (B,) of true lengths, each >= 1."""
        steps = ids.shape[1]
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        # Packing makes the LSTM skip the padding, so padding cannot change the result.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)  # (B, T, 2H)
        pooled = self._pool(states, lengths.to(states.device), h_n)
        return self.head(self.head_dropout(pooled))  # (B, N)

    def _pool(self, states: torch.Tensor, lengths: torch.Tensor, h_n: torch.Tensor) -> torch.Tensor:
        pooling = self.config.pooling
        if pooling == "last":
            # Final forward state and (if bidirectional) final backward state of the top layer.
            directions = 2 if self.config.bidirectional else 1
            return torch.cat(list(h_n[-directions:]), dim=-1)  # (B, 2H)
        mask = torch.arange(states.shape[1], device=states.device)[None, :] < lengths[:, None]
        mask = mask.unsqueeze(-1)  # (B, T, 1)
        mean = states.masked_fill(~mask, 0.0).sum(1) / lengths[:, None].to(states.dtype)
        if pooling == "mean":
            return mean
        maximum = states.masked_fill(~mask, float("-inf")).amax(1)  # (B, 2H)
        if pooling == "max":
            return maximum
        return torch.cat([maximum, mean], dim=-1)  # (B, 4H)
