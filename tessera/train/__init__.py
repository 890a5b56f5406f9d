"""Self-supervised pretraining: real-data corpus, views, shards, losses and the training loop."""
