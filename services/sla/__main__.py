"""`python -m services.sla`: run the SLA service, configured by environment variables."""

from services.sla.bootstrap import build_app
from services.sla.settings import SlaSettings
from shared.app import serve

settings = SlaSettings()
serve(build_app(settings), settings)
