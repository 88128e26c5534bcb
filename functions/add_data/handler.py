"""The Lambda entry point of `functions/add_data` (template.yaml: `functions.add_data.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.add_data.routes import ROUTES

handler = lambda_entry(ROUTES)
