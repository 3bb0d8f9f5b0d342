"""`python -m services.intake`: run the intake service, configured by environment variables."""

from services.intake.bootstrap import build_app
from services.intake.settings import IntakeSettings
from shared.app import build_and_serve

settings = IntakeSettings()
build_and_serve("intake", lambda: build_app(settings), settings, rules="triage rules")
