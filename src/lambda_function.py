"""AWS Lambda entry point, named by the stack's ``Handler``: ``lambda_function.lambda_handler``.

The routes live in ``cloudtrail_es.aws.handler``; this file only keeps the name Lambda calls.
"""
from cloudtrail_es.aws.handler import lambda_handler

__all__ = ["lambda_handler"]
