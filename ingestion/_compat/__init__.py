"""Every use of a private API of great-expectations, so that an upgrade that changes it breaks
here, loudly, in tests/test_compat.py, and nowhere else."""
