"""Models: pooling heads and the pair model with its self-contained folder."""
