"""`python -m services.insights`: run the insights service, configured by environment variables."""

from services.insights.bootstrap import build_app
from services.insights.settings import InsightsSettings
from shared.app import build_and_serve

settings = InsightsSettings()
build_and_serve("insights", lambda: build_app(settings), settings, rules="settings")
