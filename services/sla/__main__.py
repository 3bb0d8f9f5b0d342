"""`python -m services.sla`: run the SLA service, configured by environment variables."""

from services.sla.bootstrap import build_app
from services.sla.settings import SlaSettings
from shared.app import build_and_serve

settings = SlaSettings()
build_and_serve("sla", lambda: build_app(settings), settings, rules="SLA policy file")
