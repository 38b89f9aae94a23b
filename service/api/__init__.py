"""HTTP layer: routes, request/response schemas, limits and error mapping. Never touches a tensor."""
