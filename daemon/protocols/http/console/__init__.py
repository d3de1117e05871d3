"""The web console: a page on the box, in the browser of whoever runs it, built on the HTTP API.

``routes`` serves the page's files (``static/``: plain HTML, CSS and JavaScript, nothing fetched from anywhere
else) under ``/console/`` and the session routes that exchange a token for a cookie
(:mod:`daemon.protocols.http.sessions`). Everything the page shows or does goes through the API's own routes,
with the session's scopes.

May import what ``daemon.protocols`` may, and the rest of ``daemon.protocols.http``.
"""
