"""Embedding -> bidirectional LSTM over packed sequences -> pooling -> linear head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from model.config import ModelConfig


class SentimentClassifier(nn.Module):
    """Text classifier; ``forward(ids, lengths)`` returns unnormalised logits (B, num_labels).

    ``forward`` is TorchScript-compatible (``torch.jit.script``), so the predictor can run it as one
    call that holds the GIL only at its start and end (see ``model.predictor.script``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.pooling = config.pooling
        self.directions = 2 if config.bidirectional else 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, config.pad_id)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.use_lexicon = config.lexicon
        # (V, 1) prior valence per token id, a buffer so that it is saved with the weights but never
        # trained: words seen in no training text keep the lexicon's value.
        rows = config.vocab_size if config.lexicon else 0
        self.register_buffer("lexicon", torch.zeros(rows, 1), persistent=config.lexicon)
        self.lexicon: torch.Tensor  # for type checkers: (V, 1), or (0, 1) without a lexicon
        # One weight per label for each word (rows 0..V-1) and each hash bucket of word
        # pairs (rows V..V+B-1): what a bag-of-n-grams linear model learns quickly and exactly, so the
        # LSTM can spend itself on what such a model cannot (negation, contrast, word order). Starts at
        # zero, so an untrained path adds nothing.
        self.vocab_size, self.ngram_buckets = config.vocab_size, config.ngram_buckets
        self.ngram_dropout = config.ngram_dropout
        if config.ngram_buckets:
            rows = config.vocab_size + config.ngram_buckets
            self.register_parameter("ngrams", nn.Parameter(torch.zeros(rows, config.num_labels)))
        else:  # older checkpoints have no such weights and load unchanged
            self.register_buffer("ngrams", torch.zeros(0, config.num_labels), persistent=False)
        self.ngrams: torch.Tensor  # (V + B, N), or (0, N) without n-grams
        self.lstm = nn.LSTM(
            config.input_size,
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
        return self.classify(self.embedding(ids), ids, lengths)

    def classify(self, embedded: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits from the embeddings (B, T, E) of ``ids``: training perturbs them adversarially."""
        x = self.embedding_dropout(embedded)  # (B, T, E)
        if self.use_lexicon:
            x = torch.cat([x, self.lexicon[ids]], dim=-1)  # (B, T, E + 1)
        # Packing makes the LSTM skip the padding, so padding cannot change the result.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        pooled = self._pool(out, lengths.to(x.device), h_n)
        logits = self.head(self.head_dropout(pooled))  # (B, N)
        if self.ngram_buckets:
            ngrams = self._ngram_logits(ids, lengths.to(ids.device))
            if self.training and self.ngram_dropout > 0:
                keep = torch.rand(ngrams.shape[0], 1, device=ngrams.device) >= self.ngram_dropout
                ngrams = ngrams * keep.to(ngrams.dtype) / (1 - self.ngram_dropout)
            logits = logits + ngrams
        return logits

    def _ngram_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N): the mean weight of each text's words and adjacent word pairs (fastText's bag of
        n-grams, Joulin et al. 2017), the pairs hashed into ``ngram_buckets`` rows."""
        steps = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)  # (1, T)
        pairs = self.vocab_size + (ids[:, :-1] * 1_000_003 + ids[:, 1:]) % self.ngram_buckets  # (B, T-1)
        rows = torch.cat([ids, pairs], dim=1)  # (B, 2T-1)
        # Word t is in the text when t < length, the pair (t, t+1) when t + 1 < length.
        inside = torch.cat([steps, steps[:, 1:]], dim=1) < lengths.unsqueeze(1)
        summed = (self.ngrams[rows] * inside.unsqueeze(-1).to(self.ngrams.dtype)).sum(dim=1)  # (B, N)
        return summed / (2 * lengths - 1).clamp_min(1).unsqueeze(1).to(summed.dtype)

    def _pool(self, out: PackedSequence, lengths: torch.Tensor, h_n: torch.Tensor) -> torch.Tensor:
        """Pool each text's states straight from the packed output, never padding it.

        Padding the states to (B, T, 2H) and masking them twice costs about ten times as much as pooling
        the packed rows, a fifth of a small batch's forward pass on one CPU thread.
        """
        pooling = self.pooling
        if pooling == "last":
            # Final forward state and (if bidirectional) final backward state of the top layer.
            last = h_n[-self.directions :]  # (D, B, H)
            return last.transpose(0, 1).reshape(last.shape[1], -1)  # (B, D*H), forward first
        states, batch_sizes = out.data, out.batch_sizes  # (sum of lengths, 2H); texts per time step
        order, unorder = out.sorted_indices, out.unsorted_indices  # set: packed with enforce_sorted=False
        assert order is not None and unorder is not None
        # Time-major rows: step t holds the first batch_sizes[t] texts (longest first), so a row's
        # text is its offset within its step.
        starts = batch_sizes.cumsum(0) - batch_sizes
        text = (torch.arange(states.shape[0]) - starts.repeat_interleave(batch_sizes)).to(states.device)
        shape = [int(batch_sizes[0]), states.shape[1]]
        pooled: list[torch.Tensor] = []
        if pooling in ("max", "max_mean"):
            index = text.unsqueeze(1).expand_as(states)
            pooled.append(states.new_full(shape, float("-inf")).scatter_reduce_(0, index, states, "amax"))
        if pooling in ("mean", "max_mean"):
            sorted_lengths = lengths[order].to(states.dtype)
            pooled.append(states.new_zeros(shape).index_add_(0, text, states) / sorted_lengths.unsqueeze(1))
        together = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)  # (B, 2H or 4H)
        return together.index_select(0, unorder)  # back to the input order
