"""Image-generation tests: the tiny VQ settings (`sample_ds` is in tests/conftest.py)."""

# A codebook small enough to train in a second or two on CPU: 16 px images, f=4 -> a 4x4 grid.
TINY = {"resolution": 16, "batch_size": 8,
        "codebook": {"size": 32, "dim": 4, "factor": 4, "width": 8, "steps": 12, "save_every": 5, "restart_every": 4}}


