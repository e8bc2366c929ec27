"""Ozeki's HTTP API (``/api``), the OpenAPI description, ``/healthz`` and ``/metrics``.

The application that serves them (and the web console) is built by
:func:`gateway.app.create_app`.
"""
