"""Layer 10, experiments: the runs that produce the shipped results in data/ (``make data`` and friends).
"""
