"""The console: the browser workplace under `/console` for policy owners, approvers, planners and operators.

Pages are rendered by the service (Jinja2 templates, a small script of our own, no third-party assets).
Each page and action calls the same functions as the API handler it mirrors and declares that handler's
roles (`service.console.access`), so the console can do exactly what the caller's key may do over HTTP.
"""
