"""Strata data: TFDS builders for embedded datasets, the Grain pipeline, preprocessing ops."""
