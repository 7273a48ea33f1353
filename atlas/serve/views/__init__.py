"""The server's routes, one module per kind of question; each reads through the injected
:class:`atlas.serve.state.AtlasState` and asks :mod:`atlas.query` (no SQL of its own)."""

from atlas.serve.views import analysis, catalog, live, neurons, page, sql

ROUTERS = [page.router, catalog.router, neurons.router, analysis.router, sql.router,
           live.router]
