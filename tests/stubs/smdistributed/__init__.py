"""Test stand-in for the SageMaker distributed data parallel library (see dataparallel/torch/torch_smddp.py)."""
