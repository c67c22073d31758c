"""Amazon SageMaker: job submission (job.py, used by the `sagemaker` Hydra launcher), the container
entry every rank runs (entry.py), and in-container secrets (secrets.py).

Import-light: the SageMaker SDK and boto3 are imported inside the functions that call AWS.
"""
