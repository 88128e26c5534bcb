"""The Lambda entry point of `functions/forward_batch` (template.yaml: `functions.forward_batch.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.forward_batch.routes import ROUTES

handler = lambda_entry(ROUTES)
