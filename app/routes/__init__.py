"""The service's routers, one per area, over the serving state: each route validates, calls it, shapes the answer."""
