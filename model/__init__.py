"""Embedding + BiLSTM sentiment classifier, its tokenizer, checkpoint format and predictor."""

from model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.network import SentimentClassifier
from model.predictor import Prediction, Predictor, resolve_device
from model.tokenizer import TextTokenizer

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ModelConfig",
    "Prediction",
    "Predictor",
    "SentimentClassifier",
    "TextTokenizer",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
]
