"""Every use of a private API of scikit-learn, so that an upgrade that changes it breaks here,
loudly, in tests/test_compat.py, and nowhere else."""
