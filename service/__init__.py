"""FastAPI service serving batched predictions from a checkpoint."""
