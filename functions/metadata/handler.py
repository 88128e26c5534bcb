"""The Lambda entry point of `functions/metadata` (template.yaml: `functions.metadata.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.metadata.routes import ROUTES

handler = lambda_entry(ROUTES)
