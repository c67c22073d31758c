"""Process entry points other than the command line: a SageMaker job's ranks, a local sweep job's DDP ranks."""
