"""The HTTP API: GPT-SoVITS's own ``api_v2`` routes, OpenAI's speech routes, the box's own REST routes, the web
console and its health checks.

``server`` runs uvicorn in its own thread and is the pipeline's way back to a waiting response; ``access``
decides who may call what (bearer tokens, the console's ``sessions``, scopes, rate limits); ``responses``
turns a request's audio into a whole or streamed response; ``api_v2`` and ``openai`` are the two client
contracts, ``native`` the box's own (with ``request_records``, what it remembers of requests, and
``event_feed``, the event stream), ``audit_trail`` the audit trail for an admin; ``console`` is a page built on
them; ``app`` assembles them.

May import what ``daemon.protocols`` may: ``daemon.core``, ``daemon.speech``, ``daemon.audio`` and the
foundation. FastAPI and uvicorn are imported only when ``http.port`` is set.
"""
