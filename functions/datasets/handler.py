"""The Lambda entry point of `functions/datasets` (template.yaml: `functions.datasets.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.datasets.routes import ROUTES

handler = lambda_entry(ROUTES)
