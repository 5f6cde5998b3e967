"""Shared contracts of market-fusion: settings, Redis keys, schemas, features, store."""
