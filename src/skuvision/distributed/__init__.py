"""Distributed plumbing: SageMaker cluster environment and the SMDDP strategy.

Importing this package registers the ``smddp`` strategy with Lightning.
"""
