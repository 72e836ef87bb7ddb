"""The HTTP layer: routes, dependencies, the error table and the pure ASGI middleware."""
