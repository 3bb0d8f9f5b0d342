"""`python -m services.intake`: run the intake service, configured by environment variables."""

from services.intake.bootstrap import build_app
from services.intake.settings import IntakeSettings
from shared.app import serve

settings = IntakeSettings()
serve(build_app(settings), settings)
