"""The Lambda entry point of `functions/uploads` (template.yaml: `functions.uploads.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.uploads.routes import ROUTES

handler = lambda_entry(ROUTES)
