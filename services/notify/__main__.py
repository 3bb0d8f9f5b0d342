"""`python -m services.notify`: run the notify service, configured by environment variables."""

from services.notify.bootstrap import build_app
from services.notify.settings import NotifySettings
from shared.app import serve

settings = NotifySettings()
serve(build_app(settings), settings)
