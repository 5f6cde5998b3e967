"""``fusion ui``: the web dashboard of the whole loop (markets, archive, training, trader)."""
