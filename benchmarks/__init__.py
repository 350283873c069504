"""Side-by-side benchmarks (never timed tests): `python -m benchmarks.run [--only lm,cnn]`."""
