"""The admin UI, served by the proxy at `/ui`: Jinja2 templates, vendored htmx, server-side SVG charts.

`include_ui_routes(app)` (in `routes.py`) mounts it. Pages call the service layer, never the repositories' rules twice.
"""
