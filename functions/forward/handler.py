"""The Lambda entry point of `functions/forward` (template.yaml: `functions.forward.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.forward.routes import ROUTES

handler = lambda_entry(ROUTES)
