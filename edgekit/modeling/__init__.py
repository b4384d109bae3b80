"""The networks: where a model comes from and loading it into PyTorch (models.py), the networks trained and
exported (networks.py), static-embedding students (static.py), the architectures students derive from
(families.py), and what a sentence-transformers folder says (sentence_config.py).
"""
