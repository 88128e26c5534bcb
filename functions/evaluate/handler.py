"""The Lambda entry point of `functions/evaluate` (template.yaml: `functions.evaluate.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.evaluate.routes import ROUTES

handler = lambda_entry(ROUTES)
