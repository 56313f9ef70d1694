"""The admin service: publish, inspect and roll back a namespace's config over HTTP.

Built by `admin.app.create_app(settings)`; run by `configbus admin`.
"""
