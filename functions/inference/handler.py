"""The Lambda entry point of `functions/inference` (template.yaml: `functions.inference.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.inference.routes import ROUTES

handler = lambda_entry(ROUTES)
