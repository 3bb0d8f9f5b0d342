"""`python -m services.intake`: run the intake service, configured by environment variables."""

import sys

from services.intake.bootstrap import build_app
from services.intake.settings import IntakeSettings
from services.intake.triage import InvalidRules
from shared.app import serve

settings = IntakeSettings()
try:
    app = build_app(settings)
except InvalidRules as invalid:
    sys.exit(f"intake cannot start: {invalid}")
serve(app, settings)
