"""Everything HTTP: the endpoints (wms, api, feed, pages, metrics), the fast ingest endpoint
in front of the app (ingest.py), auth and security headers (auth.py), request bodies and
parameters (bodies.py), HTML helpers (html.py), JSON answers (respond.py) and the OpenAPI
document (openapi/). Handlers stay thin: parse, call the service, shape the answer."""
