"""`python -m services.routing`: run the routing service, configured by environment variables."""

from services.routing.bootstrap import build_app
from services.routing.settings import RoutingSettings
from shared.app import serve

settings = RoutingSettings()
serve(build_app(settings), settings)
