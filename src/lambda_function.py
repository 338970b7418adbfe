"""AWS Lambda entry point, named by the stack's ``Handler``: ``lambda_function.lambda_handler``.

The routes live in ``cloudtrail_es.aws.handler``; this file only keeps the name Lambda calls,
and tunes the garbage collector once the code is imported (``core.gctuning``).
"""
from cloudtrail_es.aws.handler import lambda_handler
from cloudtrail_es.core import gctuning

gctuning.tune()

__all__ = ["lambda_handler"]
