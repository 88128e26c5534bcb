"""The Lambda entry point of `functions/batch_jobs` (template.yaml: `functions.batch_jobs.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.batch_jobs.routes import ROUTES

handler = lambda_entry(ROUTES)
