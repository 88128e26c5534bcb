"""The Lambda entry point of `functions/model_classes` (template.yaml: `functions.model_classes.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.model_classes.routes import ROUTES

handler = lambda_entry(ROUTES)
