"""`python -m services.notify`: run the notify service, configured by environment variables."""

from services.notify.bootstrap import build_app
from services.notify.settings import NotifySettings
from shared.app import build_and_serve

settings = NotifySettings()
build_and_serve("notify", lambda: build_app(settings), settings, rules="notification rules")
